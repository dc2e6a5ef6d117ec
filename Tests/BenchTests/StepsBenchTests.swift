// Tests of `bench steps`: a trace's lines parsed, and the profile's sums and groups by kind of step.
import XCTest
@testable import bench

final class StepsBenchTests: XCTestCase {
    func line(t: Double, seconds: Double, predicted: Double, decode: Int, prompt: Int) -> String {
        "{\"admitted\":0,\"attended\":0,\"capacity\":8,\"decodeRows\":\(decode),\"logitRows\":\(decode),\"predicted\":\(predicted),"
            + "\"preempted\":1,\"promptRequests\":\(prompt > 0 ? 1 : 0),\"promptTokens\":\(prompt),\"running\":2,\"seconds\":\(seconds),"
            + "\"speed\":1,\"t\":\(t),\"waiting\":4}"
    }

    func testTheProfileGroupsStepsByKind() throws {
        let trace = [
            line(t: 0, seconds: 0.5, predicted: 0.5, decode: 0, prompt: 512),  // prompt only
            line(t: 1, seconds: 0.25, predicted: 0.2, decode: 8, prompt: 40),  // mixed, over a 0.2 s target
            line(t: 2, seconds: 0.05, predicted: 0.1, decode: 8, prompt: 0),  // decode only
            line(t: 3, seconds: 0.15, predicted: 0.15, decode: 8, prompt: 30),
        ].joined(separator: "\n")
        let p = StepsBench.profile(try StepsBench.parse(trace), itlTarget: 0.2)
        XCTAssertEqual(p.steps, 4)
        XCTAssertEqual(p.busySeconds, 0.95, accuracy: 1e-12)
        XCTAssertEqual(p.spanSeconds, 3.15, accuracy: 1e-12, "first start to last end")
        XCTAssertEqual(p.decodeTokens, 24)
        XCTAssertEqual(p.promptTokens, 582)
        XCTAssertEqual(p.overTarget, 1, "only steps with decode rows count against the inter-token target")
        XCTAssertEqual(p.preempted, 4)
        let mixed = p.kinds.first { $0.kind == .mixed }!
        XCTAssertEqual(mixed.steps, 2)
        XCTAssertEqual(mixed.seconds, 0.4, accuracy: 1e-12)
        XCTAssertEqual(mixed.promptTokens, 70)
        XCTAssertEqual(p.kinds.first { $0.kind == .decode }!.steps, 1)
        XCTAssertEqual(p.kinds.first { $0.kind == .prompt }!.promptTokens, 512)
        XCTAssertEqual(p.errorRatios.sorted(), [0.5, 1, 1, 1.25])
        XCTAssertTrue(StepsBench.table(p, itlTarget: 0.2).contains("mixed         2"))
    }

    func testABadLineIsNamed() {
        XCTAssertThrowsError(try StepsBench.parse("{\"t\":1}\n")) { error in
            XCTAssertTrue("\(error)".contains("line 1"), "\(error)")
        }
    }
}

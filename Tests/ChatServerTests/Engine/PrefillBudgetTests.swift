import XCTest
@testable import ChatServer

/// The adaptive prefill budget: full when nobody streams, what fits the target beside the decode rows otherwise.
final class PrefillBudgetTests: XCTestCase {
    func budget(target: Double? = 1.0) -> PrefillBudget {
        PrefillBudget(settings: SchedulerSettings(prefillTokensPerStep: 256, targetStepSeconds: target, minPrefillTokensPerStep: 16))
    }

    func testNobodyStreamingTakesTheWholeBudget() {
        var b = budget()
        XCTAssertEqual(b.tokens(decoding: 0), 256)
        b.record(decoding: 0, prefilled: 256, seconds: 50)   // however slow
        XCTAssertEqual(b.tokens(decoding: 0), 256)
    }

    func testBesideDecodeRowsTheBudgetFitsTheTarget() {
        var b = budget()
        XCTAssertEqual(b.tokens(decoding: 2), 16, "no measurement yet: the minimum")
        b.record(decoding: 0, prefilled: 256, seconds: 2.56)   // 10 ms per prompt token
        XCTAssertEqual(b.prefillSecondsPerToken!, 0.01, accuracy: 1e-12)
        XCTAssertEqual(b.tokens(decoding: 2), 100, "1 s / 10 ms (no decode cost measured yet)")
        b.record(decoding: 2, prefilled: 0, seconds: 0.2)
        XCTAssertEqual(b.tokens(decoding: 2), 80, "(1 - 0.2) / 0.01")
        XCTAssertEqual(b.tokens(decoding: 4), 60, "decode(4) estimated as 2 x decode(2)")
        XCTAssertEqual(b.tokens(decoding: 1), 80, "decode(1) estimated by the larger batch")
        // A slower mixed step (the box got busy): 1.6 s for 80 prompt tokens beside decode(2).
        b.record(decoding: 2, prefilled: 80, seconds: 1.8)
        XCTAssertEqual(b.prefillSecondsPerToken!, 0.015, accuracy: 1e-12)
        XCTAssertEqual(b.tokens(decoding: 2), 53)
        // Decode alone above the target: the minimum, never zero.
        b.record(decoding: 8, prefilled: 0, seconds: 1.2)
        XCTAssertEqual(b.tokens(decoding: 8), 16)
        // Fast steps: capped at the maximum.
        for _ in 0..<20 { b.record(decoding: 2, prefilled: 256, seconds: 0.25) }
        XCTAssertEqual(b.tokens(decoding: 2), 256)
    }

    func testWithoutATargetTheBudgetIsFixed() {
        var b = budget(target: nil)
        b.record(decoding: 4, prefilled: 256, seconds: 10)
        XCTAssertEqual(b.tokens(decoding: 4), 256)
        XCTAssertEqual(b.tokens(decoding: 0), 256)
    }
}

// The draft length per step (the engine's and SpeculativeGenerator's): expected tokens per second
// of the step, with extra rows priced by the cost curve and the draft's passes. Reference values
// are computed by hand below.
import Transformer
import XCTest

final class DraftLengthChoiceTests: XCTestCase {
    typealias Candidate = DraftLengthChoice.Candidate

    func testExpectedTokens() {
        XCTAssertEqual(DraftLengthChoice.expectedTokens(acceptanceRate: 0.8, k: 0), 1, accuracy: 1e-12)
        XCTAssertEqual(DraftLengthChoice.expectedTokens(acceptanceRate: 0.8, k: 3), 1 + 0.8 + 0.64 + 0.512, accuracy: 1e-12)
        XCTAssertEqual(DraftLengthChoice.expectedTokens(acceptanceRate: 0, k: 5), 1, accuracy: 1e-12)
    }

    /// Extra rows free and drafts free: the longest draft every candidate can take.
    func testFreeRowsTakeTheLongestDraft() {
        let k = DraftLengthChoice.best(
            [Candidate(acceptanceRate: 0.9, cap: 2), Candidate(acceptanceRate: 0.9, cap: 5)], stepSeconds: { _ in 1 },
            draftPassSeconds: 0)
        XCTAssertEqual(k, 5)
    }

    /// Every extra row as dear as a step and a draft pass at 0.4 of one: value(0) = 1, value(1) =
    /// 1.85 / 2.4 = 0.77, and worse after: no speculation.
    func testDearRowsChooseNone() {
        let k = DraftLengthChoice.best([Candidate(acceptanceRate: 0.85, cap: 6)], stepSeconds: { 1 + Double($0) }, draftPassSeconds: 0.4)
        XCTAssertEqual(k, 0)
    }

    /// a = 0.8, rows at 0.1 and passes at 0.1 of a step: E(k) = 1, 1.8, 2.44, 2.952, 3.3616, 3.68928,
    /// 3.951424 over 1, 1.2, ..., 2.2 seconds gives 1, 1.5, 1.743, 1.845, 1.868, 1.845, 1.796: k = 4.
    func testBalancedCostsPickTheBestRatio() {
        let k = DraftLengthChoice.best([Candidate(acceptanceRate: 0.8, cap: 6)], stepSeconds: { 1 + 0.1 * Double($0) }, draftPassSeconds: 0.1)
        XCTAssertEqual(k, 4)
    }

    /// The same prices within a latency budget: k = 4 lasts 1 + 0.4 + 0.4 = 1.8 s, past a 1.5 s limit;
    /// of k = 1, 2 (1.2, 1.4 s: values 1.5, 1.743) the better is 2. A budget the plain step already
    /// breaks leaves no drafts.
    func testDraftsStayWithinTheStepLimit() {
        let step: (Int) -> Double = { 1 + 0.1 * Double($0) }
        let candidates = [Candidate(acceptanceRate: 0.8, cap: 6)]
        XCTAssertEqual(DraftLengthChoice.best(candidates, stepSeconds: step, draftPassSeconds: 0.1, limit: 1.5), 2)
        XCTAssertEqual(DraftLengthChoice.best(candidates, stepSeconds: step, draftPassSeconds: 0.1, limit: 0.9), 0)
    }

    /// Two candidates share the step: with 2 rows per k the same prices favour shorter drafts.
    /// Tokens 2·E(k) over 1 + 0.2k + 0.1k: 2, 2.769, 3.050, 3.107, 3.056 for k = 0...4: k = 3.
    func testSeveralStreamsShareTheExtraRows() {
        let a = Candidate(acceptanceRate: 0.8, cap: 6)
        let k = DraftLengthChoice.best([a, a], stepSeconds: { 1 + 0.1 * Double($0) }, draftPassSeconds: 0.1)
        XCTAssertEqual(k, 3)
    }

    func testNoCandidatesNoDrafts() {
        XCTAssertEqual(DraftLengthChoice.best([], stepSeconds: { _ in 1 }, draftPassSeconds: 0), 0)
    }
}

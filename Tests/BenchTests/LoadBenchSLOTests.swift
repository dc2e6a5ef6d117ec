// Tests of `bench load`'s SLO verdict: a level's numbers from its outcomes (short and long prompts
// apart), which conditions a level misses, and the streams the box holds at the SLO.
import XCTest
@testable import bench

final class LoadBenchSLOTests: XCTestCase {
    let slo = LoadBench.SLO()  // 2 s, 0.2 s, 2 s

    /// A level that holds every condition, each value just at or under its target.
    func holding() -> LoadBench.LevelResult {
        var r = LoadBench.LevelResult()
        r.concurrency = 4
        r.ok = 12
        r.shortCount = 6
        r.shortTTFT = LoadBench.Percentiles([0.3, 0.4, 0.5, 0.6, 1.0, 2.0])
        r.longCount = 6
        r.longTTFT = LoadBench.Percentiles([3, 4, 5, 6, 7, 9])  // long pastes are not held to the target
        r.ttft = LoadBench.Percentiles([0.3, 0.4, 0.5, 0.6, 1.0, 2.0, 3, 4, 5, 6, 7, 9])
        r.itl = LoadBench.Percentiles([0.05, 0.1, 0.2])
        r.maxGap = 2.0
        return r
    }

    func testAllHolding() {
        XCTAssertEqual(holding().sloFailures(slo), [])
    }

    func testEachConditionFailsAlone() {
        var slowStart = holding()
        slowStart.shortTTFT.p95 = 2.41
        XCTAssertEqual(slowStart.sloFailures(slo), ["short_ttft_p95 2.41 s > 2 s"])

        var slowTokens = holding()
        slowTokens.itl.p95 = 0.231
        XCTAssertEqual(slowTokens.sloFailures(slo), ["itl_p95 0.231 s > 0.2 s"])

        var silent = holding()
        silent.maxGap = 2.5
        XCTAssertEqual(silent.sloFailures(slo), ["max_gap 2.50 s > 2 s"])

        var failed = holding()
        failed.failed = 1
        XCTAssertEqual(failed.sloFailures(slo), ["failed 1"])

        var turnedAway = holding()
        turnedAway.rejected = 3
        XCTAssertEqual(turnedAway.sloFailures(slo), ["rejected 3"], "a 429 is a user turned away")
    }

    func testTargetsComeFromTheOptions() throws {
        let strict = try LoadBench.Options.parse(["--slo-ttft", "0.5", "--slo-itl", "0.05", "--slo-silence", "1"]).slo
        XCTAssertEqual(
            holding().sloFailures(strict), ["short_ttft_p95 2.00 s > 0.5 s", "itl_p95 0.200 s > 0.05 s", "max_gap 2.00 s > 1 s"])
    }

    /// Without a short prompt's first token the level cannot claim the time-to-first-token condition.
    func testNoShortPromptIsAMiss() throws {
        var onlyLong = holding()
        onlyLong.shortCount = 0
        onlyLong.shortTTFT = LoadBench.Percentiles()
        let failures = onlyLong.sloFailures(slo)
        XCTAssertEqual(failures.count, 1)
        XCTAssertTrue(failures[0].contains("no short prompt"), failures[0])

        var nothing = LoadBench.LevelResult()
        nothing.rejected = 4
        XCTAssertEqual(nothing.sloFailures(slo).count, 2, "\(nothing.sloFailures(slo))")

        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(onlyLong.jsonLine(slo: slo).utf8)) as? [String: Any])
        XCTAssertEqual(object["slo_ok"] as? Bool, false)
        XCTAssertEqual(object["slo_failed"] as? [String], failures)
    }

    /// Outcomes become a level: short and long prompts apart, later turns apart, failures and 429s counted.
    func testLevelFromOutcomes() {
        func ok(_ ttft: Double, long: Bool, turn: Int = 0, gaps: [Double] = [0.1]) -> StreamOutcome {
            var o = StreamOutcome(status: .ok)
            o.timeToFirstToken = ttft
            o.long = long
            o.turn = turn
            o.interTokenGaps = gaps
            o.completionTokens = gaps.count + 1
            return o
        }
        var rejected = StreamOutcome(status: .rejected(retryAfter: 1))
        rejected.seconds = 0.01
        let outcomes = [
            ok(0.2, long: false), ok(0.4, long: false, gaps: [0.1, 2.5]), ok(5, long: true), ok(7, long: true, turn: 1),
            ok(0.3, long: false, turn: 1), rejected, StreamOutcome(status: .failed("boom")),
        ]
        let r = LoadBench.LevelResult(concurrency: 2, seconds: 10, outcomes: outcomes)
        XCTAssertEqual(r.ok, 5)
        XCTAssertEqual(r.rejected, 1)
        XCTAssertEqual(r.failed, 1)
        XCTAssertEqual(r.errors, ["boom"])
        XCTAssertEqual(r.shortCount, 3)
        XCTAssertEqual(r.shortTTFT, LoadBench.Percentiles([0.2, 0.4, 0.3]))
        XCTAssertEqual(r.longCount, 2)
        XCTAssertEqual(r.longTTFT, LoadBench.Percentiles([5, 7]))
        XCTAssertEqual(r.ttft, LoadBench.Percentiles([0.2, 0.4, 5, 7, 0.3]))
        XCTAssertEqual(r.laterTurnCount, 2)
        XCTAssertEqual(r.maxGap, 2.5)
        XCTAssertEqual(r.completionTokens, 11)
        XCTAssertEqual(r.sloFailures(slo), ["itl_p95 2.500 s > 0.2 s", "max_gap 2.50 s > 2 s", "failed 1", "rejected 1"])
    }

    /// The highest level that held with every lower level holding too; levels in any order.
    func testStreamsAtSLO() {
        XCTAssertEqual(LoadBench.streamsAtSLO([(1, true), (2, true), (4, false), (8, true)]), 2)
        XCTAssertEqual(LoadBench.streamsAtSLO([(8, true), (1, true), (4, true), (2, true)]), 8)
        XCTAssertEqual(LoadBench.streamsAtSLO([(1, false), (2, true)]), 0)
        XCTAssertEqual(LoadBench.streamsAtSLO([(4, true), (16, true), (32, false)]), 16, "only measured levels count")
        XCTAssertEqual(LoadBench.streamsAtSLO([(1, true), (4, true), (4, false), (8, true)]), 1, "a miss of a repeated level counts")
        XCTAssertEqual(LoadBench.streamsAtSLO([]), 0)
    }

    func testLastJSONLine() throws {
        let line = LoadBench.streamsJSONLine(streams: 6, slo: LoadBench.SLO(ttft: 1.5, itl: 0.2, silence: 2))
        let object = try XCTUnwrap(JSONSerialization.jsonObject(with: Data(line.utf8)) as? [String: Any])
        XCTAssertEqual(object["streams_at_slo"] as? Int, 6)
        let targets = try XCTUnwrap(object["slo"] as? [String: Double])
        XCTAssertEqual(targets, ["ttft_s": 1.5, "itl_s": 0.2, "silence_s": 2])
    }

    func testOrdinals() {
        XCTAssertEqual(
            [1, 2, 3, 4, 11, 12, 13, 21, 22, 112].map(LoadBench.ordinal),
            ["1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "112th"])
    }
}

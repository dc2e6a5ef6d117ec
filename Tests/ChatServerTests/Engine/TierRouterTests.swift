import XCTest

@testable import ChatServer

/// The `auto` routing policy with a fake clock and a given heavy-tier load.
final class TierRouterTests: XCTestCase {
    let calm = TierLoad(predictedWaitSeconds: 0.1, stepSecondsP95: 0.08)

    func testRequestFeaturesPickTheTier() {
        let router = TierRouter()
        func route(_ f: RoutingFeatures) -> (ModelTier, RoutingReason) { router.route(f, heavyLoad: calm, now: 0) }
        XCTAssertTrue(route(RoutingFeatures(promptTokens: 30)) == (.light, .general))
        XCTAssertTrue(route(RoutingFeatures(promptTokens: 30, thinkHarder: true)) == (.heavy, .thinkHarder))
        XCTAssertTrue(route(RoutingFeatures(promptTokens: 30, looksLikeCode: true)) == (.heavy, .code))
        XCTAssertTrue(route(RoutingFeatures(promptTokens: 1_500)) == (.heavy, .longPrompt))
        XCTAssertTrue(route(RoutingFeatures(promptTokens: 1_499)) == (.light, .general))
        XCTAssertTrue(route(RoutingFeatures(promptTokens: 30, historyTurns: 6)) == (.heavy, .deepHistory))
        XCTAssertTrue(route(RoutingFeatures(promptTokens: 30, historyTurns: 5)) == (.light, .general))
        // A conversation stays where its prefix is cached, whichever way its new message reads.
        XCTAssertTrue(route(RoutingFeatures(promptTokens: 30, conversationTier: .heavy)) == (.heavy, .conversation))
        XCTAssertTrue(route(RoutingFeatures(promptTokens: 3_000, looksLikeCode: true, conversationTier: .light)) == (.light, .conversation))
    }

    func testOverloadDegradesToLightUntilTheHeavyTierRecovers() {
        let router = TierRouter(settings: .init(ttftTarget: 2, itlTarget: 0.2, recoverySeconds: 10))
        let code = RoutingFeatures(promptTokens: 40, looksLikeCode: true, conversationTier: .heavy)
        XCTAssertTrue(router.route(code, heavyLoad: calm, now: 0) == (.heavy, .conversation))
        // A long queue ahead (wait past half the TTFT target): light, even for heavy conversations.
        XCTAssertTrue(router.route(code, heavyLoad: TierLoad(predictedWaitSeconds: 1.2, stepSecondsP95: 0.1), now: 1) == (.light, .degraded))
        // Steps past the inter-token target: light too; a refusing engine (no predicted wait) as well.
        XCTAssertTrue(router.route(code, heavyLoad: TierLoad(predictedWaitSeconds: 0.1, stepSecondsP95: 0.25), now: 2) == (.light, .degraded))
        XCTAssertTrue(router.route(code, heavyLoad: TierLoad(predictedWaitSeconds: nil, stepSecondsP95: 0.1), now: 3) == (.light, .degraded))
        // Between "healthy" (70 % of the bounds) and "breaking": still degraded, the recovery clock does not start.
        let middling = TierLoad(predictedWaitSeconds: 0.8, stepSecondsP95: 0.15)
        XCTAssertTrue(router.route(code, heavyLoad: middling, now: 30) == (.light, .degraded))
        // Healthy from t=31: degraded until 10 s of it have passed.
        XCTAssertTrue(router.route(code, heavyLoad: calm, now: 31) == (.light, .degraded))
        XCTAssertTrue(router.route(code, heavyLoad: calm, now: 40.9) == (.light, .degraded))
        XCTAssertTrue(router.isDegraded)
        XCTAssertTrue(router.route(code, heavyLoad: calm, now: 41) == (.heavy, .conversation))
        XCTAssertFalse(router.isDegraded)
        // A relapse during recovery restarts the clock.
        _ = router.route(code, heavyLoad: TierLoad(predictedWaitSeconds: 5, stepSecondsP95: 0.1), now: 50)
        _ = router.route(code, heavyLoad: calm, now: 51)
        _ = router.route(code, heavyLoad: TierLoad(predictedWaitSeconds: 0.9, stepSecondsP95: 0.1), now: 55)
        XCTAssertTrue(router.route(code, heavyLoad: calm, now: 62) == (.light, .degraded), "healthy again only since 62")
        XCTAssertTrue(router.route(code, heavyLoad: calm, now: 72) == (.heavy, .conversation))
    }

    func testWithoutDegradeEveryRequestKeepsItsTierWhateverTheLoad() {
        let router = TierRouter(settings: .init(ttftTarget: 2, itlTarget: 0.2, recoverySeconds: 10, degrade: false))
        let code = RoutingFeatures(promptTokens: 40, looksLikeCode: true)
        let loads = [
            calm, TierLoad(predictedWaitSeconds: 1.2, stepSecondsP95: 0.1), TierLoad(predictedWaitSeconds: 0.1, stepSecondsP95: 0.25),
            TierLoad(predictedWaitSeconds: nil, stepSecondsP95: 0.5), TierLoad(predictedWaitSeconds: 60, stepSecondsP95: 3),
        ]
        for (t, load) in loads.enumerated() {
            XCTAssertTrue(router.route(code, heavyLoad: load, now: Double(t)) == (.heavy, .code), "\(load)")
            XCTAssertTrue(router.route(RoutingFeatures(promptTokens: 30), heavyLoad: load, now: Double(t)) == (.light, .general))
            XCTAssertTrue(
                router.route(RoutingFeatures(promptTokens: 30, conversationTier: .heavy), heavyLoad: load, now: Double(t))
                    == (.heavy, .conversation))
            XCTAssertFalse(router.isDegraded)
        }
        // The same loads with degrade on (the default) do degrade: the difference is the setting.
        let degrading = TierRouter(settings: .init(ttftTarget: 2, itlTarget: 0.2, recoverySeconds: 10))
        XCTAssertTrue(degrading.route(code, heavyLoad: loads[1], now: 0) == (.light, .degraded))
    }

    func testOverflowOnlyWhenEveryLocalTierIsSaturated() {
        let router = TierRouter(settings: .init(ttftTarget: 2, itlTarget: 0.2, overflowModel: "up/big"))
        let busyHeavy = TierLoad(predictedWaitSeconds: 1.5, stepSecondsP95: 0.1)  // past half the TTFT target
        let slowHeavy = TierLoad(predictedWaitSeconds: 0, stepSecondsP95: 0.3)  // steps past the ITL target
        let refusingHeavy = TierLoad(predictedWaitSeconds: nil, stepSecondsP95: 0.1)
        let busyLight = TierLoad(predictedWaitSeconds: 2.5, stepSecondsP95: 0.1)  // past the whole TTFT target
        let refusingLight = TierLoad(predictedWaitSeconds: nil, stepSecondsP95: 0.1)
        let queuedLight = TierLoad(predictedWaitSeconds: 1.9, stepSecondsP95: 0.19)  // waits, but within the target

        XCTAssertTrue(router.overflows(lightLoad: busyLight, heavyLoad: busyHeavy))
        XCTAssertTrue(router.overflows(lightLoad: busyLight, heavyLoad: slowHeavy))
        XCTAssertTrue(router.overflows(lightLoad: refusingLight, heavyLoad: refusingHeavy))
        // One tier with room: stay local.
        XCTAssertFalse(router.overflows(lightLoad: busyLight, heavyLoad: calm))
        XCTAssertFalse(router.overflows(lightLoad: calm, heavyLoad: refusingHeavy))
        XCTAssertFalse(router.overflows(lightLoad: queuedLight, heavyLoad: busyHeavy))
        // Only one local model (no heavy tier): that model's own saturation decides.
        XCTAssertTrue(router.overflows(lightLoad: busyLight, heavyLoad: nil))
        XCTAssertFalse(router.overflows(lightLoad: queuedLight, heavyLoad: nil))
        // Without an overflow model, never; with degrade off, the same rule as with it.
        XCTAssertFalse(TierRouter().overflows(lightLoad: refusingLight, heavyLoad: refusingHeavy))
        let noDegrade = TierRouter(settings: .init(degrade: false, overflowModel: "up/big"))
        XCTAssertTrue(noDegrade.overflows(lightLoad: busyLight, heavyLoad: busyHeavy))
        XCTAssertFalse(noDegrade.overflows(lightLoad: busyLight, heavyLoad: calm))
    }

    /// The heavy engine's predicted wait as the router reads it: free slots beside waiting requests
    /// are not free (the step budget or the KV cache holds those requests back).
    func testRoutingWaitCountsFreeSlotsOnlyWhileNothingWaits() {
        var o = QueueOutlook(capacity: 2, freeSlots: 1)
        XCTAssertEqual(o.routingWait(promptTokens: 100, perRequest: 2), 0, "a free slot, nobody waiting")
        o.waitingPriorities = [10, 20]
        XCTAssertEqual(o.routingWait(promptTokens: 100, perRequest: 2), 6, "behind two, no measured interval: 3 × 2 s")
        o.secondsBetweenEnds = 4
        XCTAssertEqual(o.routingWait(promptTokens: 100, perRequest: 2), 12)
        XCTAssertEqual(o.routingWait(promptTokens: 5, perRequest: 2), 4, "first in line: one request's end")
        o.displaceablePriorities = [50]
        XCTAssertEqual(o.routingWait(promptTokens: 5, perRequest: 2), 0, "takes the slot of a later request still in its prompt")
        o.waitingPriorities = []
        XCTAssertEqual(o.routingWait(promptTokens: 100, perRequest: 2), 0)
    }

    func testCodeDetection() {
        XCTAssertTrue(RoutingFeatures.looksLikeCode("Why does this fail?\n```swift\nlet x = 1\n```"))
        XCTAssertTrue(RoutingFeatures.looksLikeCode("def f(x):\n    return x + 1\nprint(f(2))"))
        XCTAssertTrue(RoutingFeatures.looksLikeCode("int main() {\n  printf(\"hi\");\n  return 0;\n}"))
        XCTAssertTrue(RoutingFeatures.looksLikeCode("Write a function that reverses a list in Python."))
        XCTAssertFalse(RoutingFeatures.looksLikeCode("What is the capital of France?"))
        XCTAssertFalse(RoutingFeatures.looksLikeCode("Dear Sam,\nthanks for the letter.\nSee you on Monday.\nBest, Ana"))
    }
}

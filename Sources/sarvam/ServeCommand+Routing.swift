import ArgumentParser
import ChatServer

extension ServeCommand {
    /// The `auto` router's settings: the engines' SLO targets, `--tier-degrade` and
    /// `--upstream-overflow` (a `NAME/MODEL` whose NAME is one of the configured upstreams).
    func tierRoutingSettings(
        _ settings: Settings, scheduler: SchedulerSettings, upstreams: [UpstreamConfiguration]
    ) throws -> TierRouter.Settings {
        var routing = TierRouter.Settings()
        routing.ttftTarget = scheduler.timeToFirstTokenTarget
        routing.itlTarget = scheduler.interTokenLatencyTarget ?? routing.itlTarget
        routing.degrade = try settings.bool(tierDegrade, "SARVAM_TIER_DEGRADE") ?? true
        if let overflow = settings.string(upstreamOverflow, "SARVAM_UPSTREAM_OVERFLOW") {
            let names = upstreams.map(\.name)
            guard let slash = overflow.firstIndex(of: "/"), overflow.index(after: slash) < overflow.endIndex,
                names.contains(String(overflow[..<slash]))
            else {
                let configured = names.isEmpty ? "no upstream is configured (--upstream NAME=URL)" : "upstreams: \(names.joined(separator: ", "))"
                throw ValidationError(
                    "--upstream-overflow / SARVAM_UPSTREAM_OVERFLOW: expected NAME/MODEL of a configured upstream, found "
                        + "\(overflow.debugDescription); \(configured)")
            }
            routing.overflowModel = overflow
        }
        return routing
    }
}

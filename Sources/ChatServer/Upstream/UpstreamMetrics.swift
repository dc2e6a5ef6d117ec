import CoreMetrics

/// The swift-metrics handles of one upstream, labelled `upstream`:
///   sarvam_upstream_requests_total{upstream,outcome}   counter (stop, length, cancelled, error)
///   sarvam_upstream_errors_total{upstream,kind}        counter (unavailable, timeout, interrupted, server_error,
///                                                                client_error, rate_limited)
///   sarvam_upstream_prompt_tokens_total{upstream}, sarvam_upstream_completion_tokens_total{upstream}  counters (its usage)
///   sarvam_upstream_up{upstream}                       gauge   (1 while its model list can be read)
final class UpstreamMetrics: @unchecked Sendable {
    static let outcomeNames = ["stop", "length", "cancelled", "error"]
    static let errorKinds = ["unavailable", "timeout", "interrupted", "server_error", "client_error", "rate_limited"]

    let promptTokens: CoreMetrics.Counter
    let completionTokens: CoreMetrics.Counter
    let up: CoreMetrics.Gauge
    private let outcomes: [String: CoreMetrics.Counter]
    private let errors: [String: CoreMetrics.Counter]

    init(upstream: String) {
        SarvamMetrics.bootstrap()  // upstreams are set up before the engines, which bootstrap otherwise
        let d = [("upstream", upstream)]
        promptTokens = CoreMetrics.Counter(label: "sarvam_upstream_prompt_tokens_total", dimensions: d)
        completionTokens = CoreMetrics.Counter(label: "sarvam_upstream_completion_tokens_total", dimensions: d)
        up = CoreMetrics.Gauge(label: "sarvam_upstream_up", dimensions: d)
        var outcomes: [String: CoreMetrics.Counter] = [:]
        for name in Self.outcomeNames {
            outcomes[name] = CoreMetrics.Counter(label: "sarvam_upstream_requests_total", dimensions: d + [("outcome", name)])
        }
        var errors: [String: CoreMetrics.Counter] = [:]
        for kind in Self.errorKinds {
            errors[kind] = CoreMetrics.Counter(label: "sarvam_upstream_errors_total", dimensions: d + [("kind", kind)])
        }
        self.outcomes = outcomes
        self.errors = errors
    }

    func count(outcome: String) { outcomes[outcome]?.increment() }
    func countError(kind: String) { errors[kind]?.increment() }
}

// Prometheus metrics of the server and its engines: swift-metrics handles (Counter, Gauge, Timer)
// backed by swift-prometheus's registry, rendered as text for `GET /metrics`.
//
// Families (all `sarvam_…`, documented in the README):
//   sarvam_http_requests_total{route,method,status}       counter   (the HTTP layer calls recordRequest)
//   sarvam_http_request_duration_seconds{route}           histogram
//   sarvam_requests_running{model}, sarvam_requests_waiting{model}         gauges
//   sarvam_kv_cache_blocks_used{model}, sarvam_kv_cache_blocks_total{model} gauges
//   sarvam_prompt_tokens_total{model}, sarvam_generated_tokens_total{model} counters
//   sarvam_engine_requests_total{model,outcome}          counter   (stop, length, cancelled, failed, rejected)
//   sarvam_engine_preemptions_total{model}               counter
//   sarvam_time_to_first_token_seconds{model}            histogram (submission -> first reply token)
//   sarvam_time_per_output_token_seconds{model}          histogram (per reply: decode time / (tokens - 1))
//   sarvam_request_latency_seconds{model}                histogram (submission -> end)
//   sarvam_queue_time_seconds{model}                     histogram (submission -> admission)
//   sarvam_engine_step_duration_seconds{model}           histogram (one batched forward step)
//   sarvam_slo_time_to_first_token_target_seconds{model}, sarvam_slo_inter_token_latency_target_seconds{model}  gauges
//   sarvam_slo_first_tokens_total{model,met}             counter   (first tokens of short prompts, within the target or not)
//   sarvam_slo_tokens_total{model,met}                   counter   (later tokens, their gap within the target or not)
//   sarvam_engine_capacity_sequences{model}              gauge     (sequences the engine runs at once)
//   sarvam_routing_decisions_total{tier,reason}          counter   ("model": "auto": the tier picked and why)
//   sarvam_process_resident_memory_bytes, sarvam_process_peak_resident_memory_bytes   gauges
//   sarvam_upstream_…{upstream}: requests, errors, tokens and reachability of remote providers (UpstreamMetrics)
import CoreMetrics
import Foundation
import Metrics
import Prometheus

public enum SarvamMetrics {
    /// Prometheus text exposition format, for the `Content-Type` of `GET /metrics`.
    public static let contentType = "text/plain; version=0.0.4; charset=utf-8"

    private static let lock = NSLock()
    nonisolated(unsafe) private static var installed: PrometheusCollectorRegistry?

    /// Installs the Prometheus backend as swift-metrics' factory (once per process; later calls
    /// return the same registry). Call before engines are built: handles made earlier stay no-ops.
    @discardableResult
    public static func bootstrap() -> PrometheusCollectorRegistry {
        lock.lock()
        defer { lock.unlock() }
        if let installed { return installed }
        let registry = PrometheusCollectorRegistry()
        var factory = PrometheusMetricsFactory(registry: registry)
        factory.durationHistogramBuckets = [
            "sarvam_time_to_first_token_seconds": seconds([0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80]),
            "sarvam_time_per_output_token_seconds": seconds([0.01, 0.02, 0.05, 0.1, 0.2, 0.35, 0.5, 1, 2, 5]),
            "sarvam_request_latency_seconds": seconds([0.25, 0.5, 1, 2, 5, 10, 20, 40, 80, 160, 320]),
            "sarvam_queue_time_seconds": seconds([0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10, 30, 60]),
            "sarvam_engine_step_duration_seconds": seconds([0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2, 5]),
            "sarvam_http_request_duration_seconds": seconds([0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5, 10, 30, 120]),
        ]
        MetricsSystem.bootstrap(factory)
        installed = registry
        // Created now so the families exist (at 0) before the first request.
        _ = processGauges
        return registry
    }

    /// The registry, bootstrapping on first use.
    public static var registry: PrometheusCollectorRegistry { bootstrap() }

    /// The text `GET /metrics` answers with; refreshes the process memory gauges first.
    public static func render() -> String {
        let registry = bootstrap()
        updateProcessGauges()
        return registry.emitToString()
    }

    /// Counts one HTTP response. `route` is the router's pattern (`/v1/chat/completions`,
    /// `/api/conversations/{id}`), never the raw path, so the label set stays small.
    public static func recordRequest(route: String, method: String, status: Int, duration: Duration) {
        CoreMetrics.Counter(
            label: "sarvam_http_requests_total",
            dimensions: [("route", route), ("method", method), ("status", String(status))]
        ).increment()
        CoreMetrics.Timer(label: "sarvam_http_request_duration_seconds", dimensions: [("route", route)]).record(duration: duration)
    }

    /// Counts one `auto` routing decision by the tier chosen and why (`RoutingReason`).
    public static func recordRouting(tier: String, reason: String) {
        CoreMetrics.Counter(label: "sarvam_routing_decisions_total", dimensions: [("tier", tier), ("reason", reason)]).increment()
    }

    // MARK: - Process memory

    private static let processGauges = (
        resident: CoreMetrics.Gauge(label: "sarvam_process_resident_memory_bytes"),
        peak: CoreMetrics.Gauge(label: "sarvam_process_peak_resident_memory_bytes")
    )

    static func updateProcessGauges() {
        if let rss = ProcessMemory.residentBytes() { processGauges.resident.record(rss) }
        if let peak = ProcessMemory.peakResidentBytes() { processGauges.peak.record(peak) }
    }

    private static func seconds(_ values: [Double]) -> [Duration] {
        values.map { .nanoseconds(Int64(($0 * 1e9).rounded())) }
    }
}

/// Resident memory of this process from procfs (Linux); nil elsewhere.
public enum ProcessMemory {
    /// Current resident set: the second field of /proc/self/statm, in pages.
    public static func residentBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/statm", encoding: .utf8) else { return nil }
        return parseStatm(text)
    }

    /// Peak resident set (VmHWM of /proc/self/status).
    public static func peakResidentBytes() -> Int? {
        guard let text = try? String(contentsOfFile: "/proc/self/status", encoding: .utf8) else { return nil }
        return parseStatusKilobytes(text, field: "VmHWM")
    }

    /// Bytes of `statm` text ("size resident shared text lib data dt", in pages).
    public static func parseStatm(_ text: String, pageSize: Int = Int(sysconf(Int32(_SC_PAGESIZE)))) -> Int? {
        let fields = text.split(whereSeparator: { $0 == " " || $0 == "\n" })
        guard fields.count >= 2, let pages = Int(fields[1]) else { return nil }
        return pages * pageSize
    }

    /// Bytes of a `Name:   1234 kB` line of /proc/<pid>/status.
    public static func parseStatusKilobytes(_ text: String, field: String) -> Int? {
        for line in text.split(separator: "\n") where line.hasPrefix(field + ":") {
            let parts = line.split(whereSeparator: { $0 == " " || $0 == "\t" })
            if parts.count >= 2, let kb = Int(parts[1]) { return kb * 1024 }
        }
        return nil
    }
}

/// The swift-metrics handles of one model's engine, labelled with the model id.
final class EngineMetrics: @unchecked Sendable {
    let running: CoreMetrics.Gauge
    let waiting: CoreMetrics.Gauge
    let kvBlocksUsed: CoreMetrics.Gauge
    let kvBlocksTotal: CoreMetrics.Gauge
    let kvBlocksCached: CoreMetrics.Gauge
    let prefixCacheHitTokens: CoreMetrics.Counter
    let promptTokens: CoreMetrics.Counter
    let generatedTokens: CoreMetrics.Counter
    let preemptions: CoreMetrics.Counter
    /// Speculative decoding: draft tokens proposed, and those the target kept, by source (the
    /// draft model's, prompt lookup's).
    let draftTokens: CoreMetrics.Counter
    let acceptedDraftTokens: CoreMetrics.Counter
    let lookupDraftTokens: CoreMetrics.Counter
    let acceptedLookupTokens: CoreMetrics.Counter
    let timeToFirstToken: CoreMetrics.Timer
    let timePerOutputToken: CoreMetrics.Timer
    let latency: CoreMetrics.Timer
    let queueTime: CoreMetrics.Timer
    let stepDuration: CoreMetrics.Timer
    let capacity: CoreMetrics.Gauge
    let ttftTarget: CoreMetrics.Gauge
    let itlTarget: CoreMetrics.Gauge
    /// [met, missed] counters of first tokens (short prompts) and of later tokens.
    private let firstTokens: [CoreMetrics.Counter]
    private let tokens: [CoreMetrics.Counter]
    private let model: String
    private let outcomes: [String: CoreMetrics.Counter]

    static let outcomeNames = ["stop", "length", "cancelled", "failed", "rejected", "preempted"]

    init(model: String) {
        self.model = model
        let d = [("model", model)]
        running = CoreMetrics.Gauge(label: "sarvam_requests_running", dimensions: d)
        waiting = CoreMetrics.Gauge(label: "sarvam_requests_waiting", dimensions: d)
        kvBlocksUsed = CoreMetrics.Gauge(label: "sarvam_kv_cache_blocks_used", dimensions: d)
        kvBlocksTotal = CoreMetrics.Gauge(label: "sarvam_kv_cache_blocks_total", dimensions: d)
        kvBlocksCached = CoreMetrics.Gauge(label: "sarvam_kv_cache_blocks_cached", dimensions: d)
        prefixCacheHitTokens = CoreMetrics.Counter(label: "sarvam_prefix_cache_hit_tokens_total", dimensions: d)
        promptTokens = CoreMetrics.Counter(label: "sarvam_prompt_tokens_total", dimensions: d)
        generatedTokens = CoreMetrics.Counter(label: "sarvam_generated_tokens_total", dimensions: d)
        preemptions = CoreMetrics.Counter(label: "sarvam_engine_preemptions_total", dimensions: d)
        let draftSource = d + [("source", "draft")], lookupSource = d + [("source", "lookup")]
        draftTokens = CoreMetrics.Counter(label: "sarvam_speculative_draft_tokens_total", dimensions: draftSource)
        acceptedDraftTokens = CoreMetrics.Counter(label: "sarvam_speculative_accepted_tokens_total", dimensions: draftSource)
        lookupDraftTokens = CoreMetrics.Counter(label: "sarvam_speculative_draft_tokens_total", dimensions: lookupSource)
        acceptedLookupTokens = CoreMetrics.Counter(label: "sarvam_speculative_accepted_tokens_total", dimensions: lookupSource)
        timeToFirstToken = CoreMetrics.Timer(label: "sarvam_time_to_first_token_seconds", dimensions: d)
        timePerOutputToken = CoreMetrics.Timer(label: "sarvam_time_per_output_token_seconds", dimensions: d)
        latency = CoreMetrics.Timer(label: "sarvam_request_latency_seconds", dimensions: d)
        queueTime = CoreMetrics.Timer(label: "sarvam_queue_time_seconds", dimensions: d)
        stepDuration = CoreMetrics.Timer(label: "sarvam_engine_step_duration_seconds", dimensions: d)
        capacity = CoreMetrics.Gauge(label: "sarvam_engine_capacity_sequences", dimensions: d)
        ttftTarget = CoreMetrics.Gauge(label: "sarvam_slo_time_to_first_token_target_seconds", dimensions: d)
        itlTarget = CoreMetrics.Gauge(label: "sarvam_slo_inter_token_latency_target_seconds", dimensions: d)
        firstTokens = ["yes", "no"].map {
            CoreMetrics.Counter(label: "sarvam_slo_first_tokens_total", dimensions: [("model", model), ("met", $0)])
        }
        tokens = ["yes", "no"].map { CoreMetrics.Counter(label: "sarvam_slo_tokens_total", dimensions: [("model", model), ("met", $0)]) }
        var outcomes: [String: CoreMetrics.Counter] = [:]
        for name in Self.outcomeNames {
            outcomes[name] = CoreMetrics.Counter(label: "sarvam_engine_requests_total", dimensions: [("model", model), ("outcome", name)])
        }
        self.outcomes = outcomes
    }

    func count(outcome: String) { outcomes[outcome]?.increment() }

    /// A short prompt's first token, within the time-to-first-token target or not.
    func countFirstToken(met: Bool) { firstTokens[met ? 0 : 1].increment() }

    /// A later token, its gap within the inter-token target or not.
    func countToken(met: Bool) { tokens[met ? 0 : 1].increment() }

    static func record(_ timer: CoreMetrics.Timer, seconds: Double) {
        timer.recordNanoseconds(Int64((max(0, seconds) * 1e9).rounded()))
    }
}

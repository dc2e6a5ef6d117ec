// Metrics of the caches beyond the KV pool, one set per cache (`cache` = kv_snapshot or response):
//   sarvam_cache_hits_total{model,cache}        counter (requests served from the cache)
//   sarvam_cache_misses_total{model,cache}      counter (lookups that found nothing usable)
//   sarvam_cache_bytes{model,cache}             gauge   (bytes held: on disk for snapshots, in memory for replies)
//   sarvam_cache_evictions_total{model,cache}   counter (entries dropped to keep the budget)
//   sarvam_cache_damaged_total{model,cache}     counter (snapshot files found damaged and deleted)
import CoreMetrics

final class CacheMetrics: @unchecked Sendable {
    let hits: CoreMetrics.Counter
    let misses: CoreMetrics.Counter
    let bytes: CoreMetrics.Gauge
    let evictions: CoreMetrics.Counter
    let damaged: CoreMetrics.Counter

    init(model: String, cache: String) {
        let d = [("model", model), ("cache", cache)]
        hits = CoreMetrics.Counter(label: "sarvam_cache_hits_total", dimensions: d)
        misses = CoreMetrics.Counter(label: "sarvam_cache_misses_total", dimensions: d)
        bytes = CoreMetrics.Gauge(label: "sarvam_cache_bytes", dimensions: d)
        evictions = CoreMetrics.Counter(label: "sarvam_cache_evictions_total", dimensions: d)
        damaged = CoreMetrics.Counter(label: "sarvam_cache_damaged_total", dimensions: d)
    }
}

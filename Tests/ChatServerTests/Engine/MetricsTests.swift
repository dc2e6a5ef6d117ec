import Foundation
import XCTest
@testable import ChatServer

/// The Prometheus text after a few requests has every engine family with plausible values.
final class EngineMetricsTests: XCTestCase {
    func testMetricsExposeTheEngineFamilies() async throws {
        SarvamMetrics.bootstrap()
        let h = try SchedulerHarness(settings: SchedulerSettings(maxRunningSequences: 2, queueLimit: 0))
        let model = h.scheduler.modelId
        var streams: [AsyncThrowingStream<GenerationEvent, Error>] = []
        for i in 0..<2 {
            streams.append(
                try h.scheduler.trySubmit(h.job("m\(i)", prompt: EngineFixture.prompt(10, seed: UInt64(i)), maxTokens: 5, user: Int64(i))))
        }
        XCTAssertThrowsError(try h.scheduler.trySubmit(h.job("refused", prompt: [1], maxTokens: 1)))
        h.scheduler.step()
        let during = SarvamMetrics.render()
        XCTAssertTrue(during.contains("sarvam_requests_running{model=\"\(model)\"} 2"), during)
        h.runToCompletion()
        for s in streams { _ = await collect(s) }
        SarvamMetrics.recordRequest(route: "/v1/chat/completions", method: "POST", status: 200, duration: .milliseconds(30))
        SarvamMetrics.recordRequest(route: "/v1/chat/completions", method: "POST", status: 429, duration: .milliseconds(1))

        let text = SarvamMetrics.render()
        let m = "{model=\"\(model)\"}"
        for line in [
            "sarvam_requests_running\(m) 0",
            "sarvam_requests_waiting\(m) 0",
            "sarvam_kv_cache_blocks_used\(m) 0",
            "sarvam_kv_cache_blocks_total\(m) 256",
            "sarvam_prompt_tokens_total\(m) 20",
            "sarvam_generated_tokens_total\(m) 10",
            "sarvam_engine_requests_total{model=\"\(model)\",outcome=\"length\"} 2",
            "sarvam_engine_requests_total{model=\"\(model)\",outcome=\"rejected\"} 1",
            "sarvam_time_to_first_token_seconds_count\(m) 2",
            "sarvam_time_per_output_token_seconds_count\(m) 2",
            "sarvam_request_latency_seconds_count\(m) 2",
            "sarvam_queue_time_seconds_count\(m) 2",
            "sarvam_http_requests_total{route=\"/v1/chat/completions\",method=\"POST\",status=\"429\"} 1",
            "sarvam_engine_capacity_sequences\(m) 2",
            "sarvam_slo_time_to_first_token_target_seconds\(m) 2",
            "sarvam_slo_inter_token_latency_target_seconds\(m) 0.2",
            // Two short prompts, each first token within 2 s; 4 later tokens each, 10 ms apart.
            "sarvam_slo_first_tokens_total{model=\"\(model)\",met=\"yes\"} 2",
            "sarvam_slo_tokens_total{model=\"\(model)\",met=\"yes\"} 8",
        ] {
            XCTAssertTrue(text.contains(line), "missing `\(line)` in:\n\(text)")
        }
        XCTAssertTrue(text.contains("sarvam_engine_step_duration_seconds_count\(m) "), text)
        // The manual clock advances 10 ms per step: TTFT lies in (0, 1] s.
        XCTAssertTrue(text.contains("sarvam_time_to_first_token_seconds_bucket{model=\"\(model)\",le=\"1.0\"} 2"), text)
        // Each reply fed 10 + 4 tokens: 3 full blocks of 4 cached per request.
        XCTAssertTrue(text.contains("sarvam_kv_cache_blocks_cached\(m) 6"), text)
        // A follow-up turn (m0's prompt + reply + one token) starts after m0's 12 cached tokens.
        let followUp = EngineFixture.prompt(10, seed: 0) + h.log["m0"] + [7]
        let stream = try h.scheduler.trySubmit(h.job("follow-up", prompt: followUp, maxTokens: 1))
        h.runToCompletion()
        _ = await collect(stream)
        XCTAssertTrue(SarvamMetrics.render().contains("sarvam_prefix_cache_hit_tokens_total\(m) 12"))
        let rss = try XCTUnwrap(text.split(separator: "\n").first { $0.hasPrefix("sarvam_process_resident_memory_bytes ") })
        let bytes = try XCTUnwrap(Double(rss.split(separator: " ")[1]))
        XCTAssertGreaterThan(bytes, 1_000_000, "resident memory of a test process is megabytes")
    }

    func testProcParsers() {
        XCTAssertEqual(ProcessMemory.parseStatm("12345 678 90 1 0 500 0\n", pageSize: 4096), 678 * 4096)
        XCTAssertNil(ProcessMemory.parseStatm("garbage", pageSize: 4096))
        let status = "Name:\tsarvam\nVmPeak:\t  900 kB\nVmHWM:\t   2048 kB\nVmRSS:\t 1024 kB\n"
        XCTAssertEqual(ProcessMemory.parseStatusKilobytes(status, field: "VmHWM"), 2048 * 1024)
        XCTAssertNil(ProcessMemory.parseStatusKilobytes(status, field: "VmSwap"))
    }
}

// What a forward pass's logits become: sampled tokens, stop decisions, streamed text, usage and
// latency metrics. The engine loop calls it for every request whose last pending token was fed.
import Transformer

struct OutputProcessor {
    let metrics: EngineMetrics
    /// Positions per sequence: a reply ends when its next token would not fit.
    let contextLength: Int
    let now: @Sendable () -> Double
    /// The SLO the metrics count tokens against (no inter-token target: every gap counts as met).
    let timeToFirstTokenTarget: Double
    let interTokenLatencyTarget: Double?
    /// Prompts up to this many tokens are the "short" ones the time-to-first-token target is for.
    static let shortPromptTokens = 256

    /// After a forward that fed `r`'s last pending token (`row`: its logits): reports the processed
    /// prompt once, samples the next token (or takes `chosen`, a token speculative decoding verified
    /// against this row) and streams its text. Returns why the reply ends, if it does.
    func process(_ r: EngineRequest, logits row: UnsafeBufferPointer<Float>, chosen: Int? = nil) -> FinishReason? {
        let t = now()
        if !r.promptReported {
            r.promptReported = true
            metrics.promptTokens.increment(by: r.job.prompt.count)
            r.continuation.yield(.promptProcessed(promptTokens: r.job.prompt.count))
        }
        if r.generatedCount >= r.job.maxTokens { return .length }
        let token = chosen ?? (r.generatedCount < r.job.minTokens ? r.sampleWithoutStopTokens(row) : r.sampler.sample(row))
        if r.job.stopTokenIds.contains(token) && !r.job.ignoreEOS { return .stop }
        if let top = r.job.logprobs {
            // The raw model's distribution (before penalties, temperature and top-k/top-p), as vLLM reports by default.
            let (chosen, alternatives) = LogSoftmax.entries(row, token: token, top: top)
            r.continuation.yield(.logprobs(TokenLogprobs(token: token, logprob: chosen, top: alternatives)))
        }
        r.tokens.append(token)
        r.generatedCount += 1
        r.sampler.observe(token)
        r.speculative?.observe(token)
        r.job.onToken?(token)
        metrics.generatedTokens.increment()
        if r.firstTokenAt == nil {
            r.firstTokenAt = t
            EngineMetrics.record(metrics.timeToFirstToken, seconds: t - r.submittedAt)
            if r.job.prompt.count <= Self.shortPromptTokens { metrics.countFirstToken(met: t - r.submittedAt <= timeToFirstTokenTarget) }
        } else if let last = r.lastTokenAt {
            metrics.countToken(met: interTokenLatencyTarget.map { t - last <= $0 } ?? true)
        }
        r.lastTokenAt = t
        let text = r.decoder.append(token)
        r.unreportedTokens += 1
        if !text.isEmpty {
            r.continuation.yield(.text(text, tokenCount: r.unreportedTokens))
            r.unreportedTokens = 0
        }
        // Another token needs the last one fed at position tokens.count - 1 < contextLength.
        if r.generatedCount >= r.job.maxTokens || r.tokens.count > contextLength { return .length }
        return nil
    }

    /// The reply ends normally: the decoder's held-back text, then `.finished` with the usage.
    /// The loop closes the stream and releases the request afterwards.
    func finish(_ r: EngineRequest, _ reason: FinishReason) {
        let tail = r.decoder.finish()
        if !tail.isEmpty { r.continuation.yield(.text(tail, tokenCount: r.unreportedTokens)) }
        r.unreportedTokens = 0
        if let first = r.firstTokenAt, let last = r.lastTokenAt, r.generatedCount > 1 {
            EngineMetrics.record(metrics.timePerOutputToken, seconds: (last - first) / Double(r.generatedCount - 1))
        }
        EngineMetrics.record(metrics.latency, seconds: now() - r.submittedAt)
        let usage = GenerationUsage(
            promptTokens: r.job.prompt.count, completionTokens: r.generatedCount,
            cachedPromptTokens: r.cachedPromptTokens)
        r.continuation.yield(.finished(reason, usage))
    }
}

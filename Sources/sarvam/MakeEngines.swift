// The seam between `serve`'s options and ChatServer's engine: one TransformerChatEngine (a batch
// scheduler over one model) per weight file.
import ChatServer
import Foundation

func makeEngines(modelPaths: [String], options: EngineOptions) async throws -> [any ChatEngine] {
    let env = ProcessInfo.processInfo.environment
    func int(_ name: String) -> Int? { env[name].flatMap { Int($0) } }
    let defaults = SchedulerSettings()
    let scheduler = SchedulerSettings(
        maxRunningSequences: options.maxSequences,
        maxRunningPerUser: int("SARVAM_MAX_SEQUENCES_PER_USER"),  // default: the max sequences
        queueLimit: options.queueLimit,
        prefillTokensPerStep: int("SARVAM_PREFILL_TOKENS_PER_STEP") ?? defaults.prefillTokensPerStep,
        targetStepSeconds: env["SARVAM_TARGET_STEP_SECONDS"].flatMap { Double($0) } ?? defaults.targetStepSeconds,
        prefixCaching: env["SARVAM_PREFIX_CACHE"].map { $0 != "0" } ?? defaults.prefixCaching,
        maxCachedPrefixBytes: int("SARVAM_PREFIX_CACHE_MB").map { $0 << 20 } ?? defaults.maxCachedPrefixBytes,
        idleCachedPrefixBytes: int("SARVAM_PREFIX_CACHE_IDLE_MB").map { $0 << 20 } ?? defaults.idleCachedPrefixBytes)
    let settings = TransformerEngineSettings(
        contextLength: options.contextLength, threads: options.threads,
        kvCacheBytes: int("SARVAM_KV_CACHE_MB").map { $0 << 20 },
        scheduler: scheduler, logger: options.logger)
    return try await makeTransformerEngines(modelPaths: modelPaths, settings: settings)
}

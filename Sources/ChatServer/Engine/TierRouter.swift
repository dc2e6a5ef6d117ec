import Foundation

/// Which of two model tiers serves a request sent to `"model": "auto"`.
public enum ModelTier: String, Sendable, Codable, CaseIterable {
    /// The small, fast model: general questions, and everything while the heavy tier is overloaded.
    case light
    /// The larger model: code, long prompts, deep conversations, or when the user asks for it.
    case heavy
}

/// Why a request went to its tier (a metrics label and a response header).
public enum RoutingReason: String, Sendable, CaseIterable {
    case general, code, longPrompt = "long_prompt", deepHistory = "deep_history", thinkHarder = "think_harder"
    case conversation, degraded
    /// Every local tier saturated: sent to the overflow upstream.
    case overflow
}

/// What is known of a request before generation.
public struct RoutingFeatures: Sendable, Equatable {
    public var promptTokens: Int
    /// Earlier user turns in the conversation.
    public var historyTurns: Int
    public var looksLikeCode: Bool
    /// The page's "think harder" switch.
    public var thinkHarder: Bool
    /// The tier that served the conversation's previous turn (its prefix cache lives there).
    public var conversationTier: ModelTier?

    public init(promptTokens: Int, historyTurns: Int = 0, looksLikeCode: Bool = false, thinkHarder: Bool = false,
                conversationTier: ModelTier? = nil) {
        self.promptTokens = promptTokens
        self.historyTurns = historyTurns
        self.looksLikeCode = looksLikeCode
        self.thinkHarder = thinkHarder
        self.conversationTier = conversationTier
    }

    /// Fenced code, or several lines that read as code (brackets, semicolons, keywords at line starts).
    public static func looksLikeCode(_ text: String) -> Bool {
        if text.contains("```") { return true }
        let lines = text.split(separator: "\n", omittingEmptySubsequences: true)
        guard lines.count >= 2 else {
            let lower = text.lowercased()
            return ["write a function", "write code", "implement ", "refactor", "debug", "stack trace", "compile"]
                .contains { lower.contains($0) }
        }
        let starts = ["def ", "func ", "fn ", "class ", "import ", "#include", "public ", "private ", "let ", "var ", "const ",
                      "return ", "if (", "for (", "while (", "struct ", "package ", "SELECT ", "}", "//", "#!"]
        let codeLike = lines.filter { line in
            let t = line.trimmingCharacters(in: .whitespaces)
            return starts.contains { t.hasPrefix($0) } || t.hasSuffix(";") || t.hasSuffix("{")
                || (t.hasPrefix("if ") && t.hasSuffix(":"))
        }
        return codeLike.count * 3 >= lines.count
    }
}

/// A tier's load, as its engine predicts it.
public struct TierLoad: Sendable, Equatable {
    /// Seconds a new short request would wait before its first step; nil when it would be refused.
    public var predictedWaitSeconds: Double?
    /// The recent p95 of its steps' durations while replies stream.
    public var stepSecondsP95: Double

    public init(predictedWaitSeconds: Double?, stepSecondsP95: Double) {
        self.predictedWaitSeconds = predictedWaitSeconds
        self.stepSecondsP95 = stepSecondsP95
    }
}

/// The routing policy of `"model": "auto"`:
/// 1. While the heavy tier would break the SLO (a new request's predicted wait past half the TTFT
///    target, a refusal, or its steps past the inter-token target), every request goes light (`degraded`); it
///    counts as recovered once both stay under 70 % of those bounds for `recoverySeconds`.
/// 2. Otherwise a conversation keeps the tier of its previous turn (its cached prefix is there).
/// 3. Otherwise heavy for "think harder", code, prompts of `heavyPromptTokens` or more, or
///    `heavyHistoryTurns` earlier turns or more; light for the rest.
/// Without `degrade`, rule 1 is skipped (each request stays on its tier whatever the load).
/// Separately, `overflows` says when every local tier is saturated, so that the request goes to
/// the overflow upstream model, when one is configured, instead of queueing locally.
public final class TierRouter: @unchecked Sendable {
    public struct Settings: Sendable, Equatable {
        public var ttftTarget: Double
        public var itlTarget: Double
        public var heavyPromptTokens: Int
        public var heavyHistoryTurns: Int
        public var recoverySeconds: Double
        /// Whether an overloaded heavy tier sends requests light (`--tier-degrade`).
        public var degrade: Bool
        /// The upstream model (`NAME/MODEL`) that takes `auto` requests while every local tier is
        /// saturated (`--upstream-overflow`); nil: none, requests queue locally.
        public var overflowModel: String?

        public init(ttftTarget: Double = 2, itlTarget: Double = 0.2, heavyPromptTokens: Int = 1_500, heavyHistoryTurns: Int = 6,
                    recoverySeconds: Double = 10, degrade: Bool = true, overflowModel: String? = nil) {
            self.ttftTarget = ttftTarget
            self.itlTarget = itlTarget
            self.heavyPromptTokens = heavyPromptTokens
            self.heavyHistoryTurns = heavyHistoryTurns
            self.recoverySeconds = recoverySeconds
            self.degrade = degrade
            self.overflowModel = overflowModel
        }
    }

    public let settings: Settings
    private let lock = NSLock()
    private var degraded = false
    /// Since when the heavy tier has looked healthy while degraded.
    private var healthySince: Double?

    public init(settings: Settings = Settings()) { self.settings = settings }

    public var isDegraded: Bool { lock.withLock { degraded } }

    /// The tier for a request, and why; `now` in seconds on any monotonic clock.
    public func route(_ features: RoutingFeatures, heavyLoad: TierLoad, now: Double) -> (ModelTier, RoutingReason) {
        let overloaded = settings.degrade && lock.withLock { updateDegraded(heavyLoad, now: now) }
        if overloaded { return (.light, .degraded) }
        if let tier = features.conversationTier { return (tier, .conversation) }
        if features.thinkHarder { return (.heavy, .thinkHarder) }
        if features.looksLikeCode { return (.heavy, .code) }
        if features.promptTokens >= settings.heavyPromptTokens { return (.heavy, .longPrompt) }
        if features.historyTurns >= settings.heavyHistoryTurns { return (.heavy, .deepHistory) }
        return (.light, .general)
    }

    /// Whether every local tier is saturated, so a request should go to the overflow upstream
    /// (when `overflowModel` is set): the light tier would refuse it or make it wait past the TTFT
    /// target, and the heavy tier, when there is one, would break the SLO (the bound that degrades).
    /// Independent of `degrade` and of the tier `route` chose.
    public func overflows(lightLoad: TierLoad, heavyLoad: TierLoad?) -> Bool {
        guard settings.overflowModel != nil else { return false }
        guard (lightLoad.predictedWaitSeconds ?? .infinity) > settings.ttftTarget else { return false }
        return heavyLoad.map(breaking) ?? true
    }

    /// A new request's predicted wait past half the TTFT target (the rest is left for its prefill
    /// and first step), the engine refusing, or steps past the inter-token target.
    private func breaking(_ load: TierLoad) -> Bool {
        (load.predictedWaitSeconds ?? .infinity) > settings.ttftTarget * 0.5 || load.stepSecondsP95 > settings.itlTarget
    }

    private func updateDegraded(_ load: TierLoad, now: Double) -> Bool {
        let wait = load.predictedWaitSeconds ?? .infinity
        let isBreaking = breaking(load)
        let healthy = wait <= settings.ttftTarget * 0.5 * 0.7 && load.stepSecondsP95 <= settings.itlTarget * 0.7
        if isBreaking {
            degraded = true
            healthySince = nil
        } else if degraded {
            if healthy {
                let since = healthySince ?? now
                healthySince = since
                if now - since >= settings.recoverySeconds {
                    degraded = false
                    healthySince = nil
                }
            } else {
                healthySince = nil
            }
        }
        return degraded
    }
}

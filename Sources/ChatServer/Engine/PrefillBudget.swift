// How many prompt tokens one engine step may prefill beside its decode tokens.
//
// A step is one forward over B decode rows and P prompt rows. On a CPU its time is about
//
//     T ≈ decode(B) + P × perToken
//
// decode(B): the weights read once plus B rows (what a step without prefill costs), perToken: the
// marginal cost of a prompt row in a large chunk. Both are measured from the engine's own steps
// (exponential averages), so the budget follows the machine, the model, the batch and whatever
// else runs on the box.
//
// - B = 0 (no reply is streaming): nobody's stream can stall, so the step takes the whole
//   `prefillTokensPerStep`; large chunks are what makes the matmuls efficient.
// - B > 0: the budget is what fits the target beside the decode rows,
//   (targetStepSeconds − decode(B)) / perToken, within [minPrefillTokensPerStep, prefillTokensPerStep].
//   A streaming reply then waits about targetStepSeconds for its next token while a long prompt is
//   admitted.
// - No target: always `prefillTokensPerStep`.

/// The adaptive prefill budget. A value owned by the engine thread.
struct PrefillBudget: Sendable, Equatable {
    let maxTokens: Int
    let minTokens: Int
    let targetSeconds: Double?
    /// Weight of a new measurement in the running averages.
    static let smoothing = 0.5

    /// Seconds of a step that only decodes, by batch size B (measured).
    private(set) var decodeSeconds: [Int: Double] = [:]
    /// Seconds per prompt row beyond the step's decode cost (measured); nil until a step prefilled.
    private(set) var prefillSecondsPerToken: Double?

    init(settings: SchedulerSettings) {
        maxTokens = settings.prefillTokensPerStep
        minTokens = settings.minPrefillTokensPerStep
        targetSeconds = settings.targetStepSeconds
    }

    /// The prompt tokens a step with `decoding` decode rows may process.
    func tokens(decoding: Int) -> Int {
        guard let target = targetSeconds, decoding > 0 else { return maxTokens }
        // Before any measurement of a prompt row's cost: the smallest budget (safe for the streams).
        guard let perToken = prefillSecondsPerToken else { return minTokens }
        guard perToken > 0 else { return maxTokens }
        let room = target - decodeEstimate(decoding)
        let fits = room > 0 ? min(room / perToken, Double(maxTokens)) : 0
        return max(minTokens, min(maxTokens, Int((fits + 1e-9).rounded(.down))))
    }

    /// The expected seconds of a step that decodes B rows: the measured value for B, else the
    /// nearest measured smaller batch scaled by rows (an overestimate: the weight reads do not
    /// grow with B), else the nearest larger one, else 0.
    func decodeEstimate(_ b: Int) -> Double {
        guard b > 0 else { return 0 }
        if let s = decodeSeconds[b] { return s }
        if let smaller = decodeSeconds.keys.filter({ $0 < b }).max() { return decodeSeconds[smaller]! * Double(b) / Double(smaller) }
        if let larger = decodeSeconds.keys.filter({ $0 > b }).min() { return decodeSeconds[larger]! }
        return 0
    }

    /// Learns from a finished step of `decoding` decode rows and `prefilled` prompt rows.
    mutating func record(decoding: Int, prefilled: Int, seconds: Double) {
        guard seconds.isFinite, seconds >= 0, decoding + prefilled > 0 else { return }
        if prefilled == 0 {
            decodeSeconds[decoding] = Self.average(decodeSeconds[decoding], seconds)
            return
        }
        // A prefill-only step still reads every weight once: count it as a decode step of one row.
        let fixed = decodeEstimate(max(decoding, 1))
        // Noise can make T − decode(B) tiny or negative; a prompt row never costs less than a
        // quarter of its share of the step.
        let marginal = max(seconds - fixed, seconds / 4)
        prefillSecondsPerToken = Self.average(prefillSecondsPerToken, marginal / Double(prefilled))
    }

    private static func average(_ old: Double?, _ new: Double) -> Double {
        guard let old else { return new }
        return old + smoothing * (new - old)
    }
}

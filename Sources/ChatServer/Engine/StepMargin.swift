// How much of the inter-token target a step is planned to last. Steps run longer than predicted
// now and then (the box is shared, the cost model is a model), and a streaming reply feels the
// step plus the engine's work between two steps. So the planned share is 1 / p95 of (time between
// step starts) / (predicted step time) over recent steps with decode rows: 95 % of them then
// end within the target. Kept within [`lowest`, `highest`] (`highest` is the setting
// `SchedulerSettings.stepMargin`, also the share used until enough steps are seen).

struct StepMargin: Sendable, Equatable {
    let highest: Double
    static let lowest = 0.5
    /// Recent steps the percentile is taken over, and how many it needs first.
    static let window = 200
    static let minimumSamples = 30

    private var ratios: [Double] = []
    private var next = 0
    /// The share of the inter-token target to plan a step for.
    private(set) var value: Double

    init(highest: Double) {
        self.highest = highest
        value = highest
    }

    /// Learns from a step with decode rows: `actual` seconds from its start to the next step's
    /// start (or its end), against the `predicted` seconds it was planned with.
    mutating func record(actual: Double, predicted: Double) {
        guard actual.isFinite, actual >= 0, predicted > 0, predicted.isFinite else { return }
        let ratio = actual / predicted
        if ratios.count < Self.window {
            ratios.append(ratio)
        } else {
            ratios[next] = ratio
        }
        next = (next + 1) % Self.window
        guard ratios.count >= Self.minimumSamples else { return }
        let sorted = ratios.sorted()
        let p95 = sorted[min(sorted.count - 1, Int((0.95 * Double(sorted.count)).rounded(.up)) - 1)]
        value = p95 > 0 ? min(highest, max(Self.lowest, 1 / p95)) : highest
    }
}

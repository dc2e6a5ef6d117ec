// What one engine step costs, learned from the engine's own steps.
//
// A step is one forward over B decode rows and P prompt rows. On a CPU its time is about
//
//     T ≈ θ0 + θ1·B + θ2·P + θ3·A/1024
//
// θ0: reading every weight once (what makes batching pay), θ1 and θ2: the matrix products of one
// decode row and one prompt row, θ3: attention, per 1,024 cached positions a row attends to
// (A sums, over the rows, the positions each row attends: a decode row at position p attends
// p + 1, a chunk of n prompt tokens from position s attends n·s + n(n+1)/2).
//
// θ is an exponentially weighted least-squares fit over recent steps, pulled towards a prior (the
// warm-up's measurements, or a rough guess) so that it is defined from the first step and stays
// sane when recent steps all look alike (say, only decode steps of one batch size). The weights
// follow the machine, the model and whatever else runs on the box.

/// The step cost model. A value owned by the engine thread.
public struct StepCostModel: Sendable, Equatable {
    /// Seconds per unit of each feature: [step, decode row, prompt row, 1,024 attended positions].
    public private(set) var coefficients: [Double]
    private var prior: [Double]
    /// Σ w·x·xᵀ and Σ w·x·y over the recorded steps, w decaying by `forgetting` per step.
    private var xx: [Double]
    private var xy: [Double]
    /// Steps recorded (for tests and logs).
    public private(set) var observations = 0

    /// Weight of the previous steps when a new one is recorded: about 1 / (1 − 0.95) = 20 steps of memory.
    static let forgetting = 0.95
    /// The prior counts as 0.1% of one step of typical features (enough to define every weight when
    /// recent steps all look alike, too little to bias a fit of varied steps).
    static let priorWeight = 0.001
    static let typicalFeatures: [Double] = [1, 16, 128, 16]

    /// `prior`: seconds per [step, decode row, prompt row, 1,024 attended positions].
    public init(prior: [Double]) {
        precondition(prior.count == 4 && prior.allSatisfy { $0 >= 0 && $0.isFinite }, "a prior of 4 non-negative seconds")
        self.prior = prior
        coefficients = prior
        xx = Array(repeating: 0, count: 16)
        xy = Array(repeating: 0, count: 4)
    }

    /// A rough prior for a model of `parameters` weights with attention of `attentionFlopsPerPosition`
    /// per attended position and token, before any measurement: 20 GFLOP/s per row and a weight read
    /// at 20 GB/s. The warm-up replaces it with measured values.
    public static func guess(weightBytes: Int, parameters: Int, attentionFlopsPerPosition: Int) -> StepCostModel {
        let perRow = 2 * Double(parameters) / 20e9
        return StepCostModel(prior: [Double(weightBytes) / 20e9, perRow, perRow,
                                     1024 * Double(attentionFlopsPerPosition) / 20e9])
    }

    /// Replaces the prior (and the current estimate) with measured values; forgets the recorded steps.
    public mutating func reset(prior: [Double]) {
        self = StepCostModel(prior: prior.map { max(0, $0) })
    }

    /// Predicted seconds of a step.
    public func predict(decodeRows: Int, promptTokens: Int, attendedPositions: Int) -> Double {
        let x = Self.features(decodeRows, promptTokens, attendedPositions)
        return zip(coefficients, x).reduce(0) { $0 + $1.0 * $1.1 }
    }

    /// Seconds that `n` prompt tokens from position `start` add to a step.
    public func promptCost(tokens n: Int, from start: Int) -> Double {
        coefficients[2] * Double(n) + coefficients[3] * Double(Self.attended(tokens: n, from: start)) / 1024
    }

    /// Positions attended by `n` consecutive rows from position `start` (causal attention).
    public static func attended(tokens n: Int, from start: Int) -> Int {
        n * start + n * (n + 1) / 2
    }

    /// Learns from a finished step.
    public mutating func record(decodeRows: Int, promptTokens: Int, attendedPositions: Int, seconds: Double) {
        guard seconds.isFinite, seconds > 0, decodeRows + promptTokens > 0 else { return }
        let x = Self.features(decodeRows, promptTokens, attendedPositions)
        for i in 0..<4 {
            xy[i] = Self.forgetting * xy[i] + x[i] * seconds
            for j in 0..<4 { xx[i * 4 + j] = Self.forgetting * xx[i * 4 + j] + x[i] * x[j] }
        }
        observations += 1
        coefficients = solve()
    }

    private static func features(_ b: Int, _ p: Int, _ a: Int) -> [Double] {
        [1, Double(b), Double(p), Double(a) / 1024]
    }

    /// (XᵀWX + Λ) θ = XᵀWy + Λ·prior, Λ = priorWeight · diag(typical²), by Gaussian elimination
    /// with partial pivoting; negative weights are clamped to 0 (no part of a step saves time).
    private func solve() -> [Double] {
        var a = xx
        var b = xy
        for i in 0..<4 {
            let lambda = Self.priorWeight * Self.typicalFeatures[i] * Self.typicalFeatures[i]
            a[i * 4 + i] += lambda
            b[i] += lambda * prior[i]
        }
        for col in 0..<4 {
            var pivot = col
            for row in (col + 1)..<4 where abs(a[row * 4 + col]) > abs(a[pivot * 4 + col]) { pivot = row }
            if pivot != col {
                for k in 0..<4 { a.swapAt(col * 4 + k, pivot * 4 + k) }
                b.swapAt(col, pivot)
            }
            let d = a[col * 4 + col]
            guard abs(d) > 1e-300 else { return coefficients }
            for row in (col + 1)..<4 {
                let f = a[row * 4 + col] / d
                if f == 0 { continue }
                for k in col..<4 { a[row * 4 + k] -= f * a[col * 4 + k] }
                b[row] -= f * b[col]
            }
        }
        var theta = [Double](repeating: 0, count: 4)
        for row in stride(from: 3, through: 0, by: -1) {
            var s = b[row]
            for k in (row + 1)..<4 { s -= a[row * 4 + k] * theta[k] }
            theta[row] = s / a[row * 4 + row]
        }
        guard theta.allSatisfy(\.isFinite) else { return coefficients }
        return theta.map { max(0, $0) }
    }
}

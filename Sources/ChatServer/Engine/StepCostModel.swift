// What one engine step costs: measured at warm-up, scaled by what the steps actually take.
//
// A step is one forward over M rows (decode rows and prompt tokens alike go through the same
// matrix products), L of which produce logits (every decode row, and the last token of a prompt),
// attending to A cached positions in all (a decode row at position p attends p + 1, a chunk of n
// prompt tokens from position s attends n·s + n(n+1)/2):
//
//     T ≈ speed · (rows(M) + logits · L + attention · A / 1024)
//
// rows(M): seconds of a step of M rows without logits, measured at warm-up for a few M and
// interpolated piecewise-linearly (it is concave: the weights are read once per step, and larger
// M use the cores better); logits: seconds per row of the output projection and sampling (for a
// small model with a large vocabulary a third of a decode row, so a prompt token costs much less
// than a decode row); attention: seconds per 1,024 attended positions, from the model's shape
// (its FLOPs per attended position against its FLOPs per row); speed: how much slower (or faster)
// the steps run now than at warm-up, an exponential average of actual / predicted over recent
// steps, so the model follows whatever else runs on the box. The shape is measured, only the
// speed is learned: a fit of several weights to steps that are all planned to last the same time
// is not determined, and a wrong fit starves the prompts or the streams.

/// The step cost model. A value owned by the engine thread.
public struct StepCostModel: Sendable, Equatable {
    /// (rows, seconds) measured, rows ascending, at least one point.
    public private(set) var curve: [Point]
    /// Seconds per 1,024 attended positions at warm-up speed.
    public private(set) var attentionSecondsPer1024: Double
    /// Seconds per row that produces logits, on top of `rows(M)`, at warm-up speed.
    public private(set) var logitRowSeconds: Double
    /// Actual / predicted seconds of recent steps.
    public private(set) var speed = 1.0
    /// Steps recorded (for tests and logs).
    public private(set) var observations = 0

    public struct Point: Sendable, Equatable {
        public var rows: Int
        public var seconds: Double
        public init(rows: Int, seconds: Double) {
            self.rows = rows
            self.seconds = seconds
        }
    }

    /// Weight of a new step in the speed average (about the last 5 steps).
    static let smoothing = 0.2
    /// One step moves the speed towards at most twice or half its value, so a step that stalled
    /// once (a page fault storm, another process) does not freeze planning; a lasting change is
    /// followed within a few steps.
    static let stepRatioBound = 2.0

    /// `curve`: seconds of steps of so many rows without logits (rows ≥ 1, ascending, seconds increasing).
    public init(curve: [Point], attentionSecondsPer1024: Double, logitRowSeconds: Double = 0) {
        precondition(
            !curve.isEmpty && curve.allSatisfy { $0.rows >= 1 && $0.seconds >= 0 && $0.seconds.isFinite },
            "a cost curve of at least one point with rows >= 1 and finite seconds")
        self.curve = curve.sorted { $0.rows < $1.rows }
        self.attentionSecondsPer1024 = max(0, attentionSecondsPer1024)
        self.logitRowSeconds = logitRowSeconds.isFinite ? max(0, logitRowSeconds) : 0
    }

    /// A straight line `fixed + perRow · M` (a guess before anything is measured, and tests).
    public init(fixed: Double, perRow: Double, attentionSecondsPer1024: Double = 0, logitRowSeconds: Double = 0) {
        self.init(
            curve: [Point(rows: 1, seconds: fixed + perRow), Point(rows: 2, seconds: fixed + 2 * perRow)],
            attentionSecondsPer1024: attentionSecondsPer1024, logitRowSeconds: logitRowSeconds)
    }

    /// Seconds of a step of `rows` rows, `logitRows` of them producing logits (nil: all, a step
    /// of decode rows), attending `attendedPositions` positions in all.
    public func predict(rows: Int, logitRows: Int? = nil, attendedPositions: Int) -> Double {
        guard rows > 0 else { return 0 }
        return speed * base(rows: rows, logitRows: logitRows ?? rows, attendedPositions: attendedPositions)
    }

    /// The prediction at warm-up speed.
    private func base(rows: Int, logitRows: Int, attendedPositions: Int) -> Double {
        rowSeconds(rows) + logitRowSeconds * Double(min(logitRows, rows))
            + attentionSecondsPer1024 * Double(attendedPositions) / 1024
    }

    /// rows(M), interpolated; beyond the measured points, extended along the nearest segment (or,
    /// with one point, proportionally).
    func rowSeconds(_ m: Int) -> Double {
        if curve.count == 1 { return curve[0].seconds * Double(m) / Double(curve[0].rows) }
        var i = 1
        while i < curve.count - 1 && curve[i].rows < m { i += 1 }
        let a = curve[i - 1], b = curve[i]
        let slope = (b.seconds - a.seconds) / Double(b.rows - a.rows)
        return max(0, a.seconds + slope * Double(m - a.rows))
    }

    /// Positions attended by `n` consecutive rows from position `start` (causal attention).
    public static func attended(tokens n: Int, from start: Int) -> Int {
        n * start + n * (n + 1) / 2
    }

    /// Learns from a finished step: the speed moves towards actual / predicted.
    public mutating func record(rows: Int, logitRows: Int? = nil, attendedPositions: Int, seconds: Double) {
        guard rows > 0, seconds.isFinite, seconds > 0 else { return }
        let base = base(rows: rows, logitRows: logitRows ?? rows, attendedPositions: attendedPositions)
        guard base > 0 else { return }
        let ratio = min(max(seconds / base, speed / Self.stepRatioBound), speed * Self.stepRatioBound)
        speed = min(max(speed + Self.smoothing * (ratio - speed), 1e-6), 1e6)
        observations += 1
    }

    /// A first guess from a model's shape, before anything is measured: the weights read once per
    /// step at 20 GB/s (`weightBytes`), each row's `rowFlops` (and a logits row's `logitRowFlops`)
    /// at 20 GFLOP/s, attention likewise.
    public static func guess(weightBytes: Int, rowFlops: Int, logitRowFlops: Int = 0, attentionFlopsPerPosition: Int) -> StepCostModel {
        StepCostModel(
            fixed: Double(weightBytes) / 20e9, perRow: Double(rowFlops) / 20e9,
            attentionSecondsPer1024: 1024 * Double(attentionFlopsPerPosition) / 20e9,
            logitRowSeconds: Double(logitRowFlops) / 20e9)
    }
}

// Choosing the next token from a logit row. Each sequence has its own Sampler (its own random
// generator and penalty history), so what it draws depends on its seed and its own tokens only,
// never on which other sequences share the batch.
//
// Order (as Hugging Face's generate): penalties -> temperature -> top-k -> top-p -> min-p -> draw.
// temperature == 0 (or top-k == 1) is greedy: the argmax after penalties, lowest id on ties.
import Foundation
import Tensor

/// xoshiro256** seeded through SplitMix64: small, fast, identical on every platform.
public struct SamplingRNG: RandomNumberGenerator, Sendable {
    private var s0, s1, s2, s3: UInt64

    public init(seed: UInt64) {
        var x = seed
        func splitMix() -> UInt64 {
            x &+= 0x9E37_79B9_7F4A_7C15
            var z = x
            z = (z ^ (z >> 30)) &* 0xBF58_476D_1CE4_E5B9
            z = (z ^ (z >> 27)) &* 0x94D0_49BB_1331_11EB
            return z ^ (z >> 31)
        }
        s0 = splitMix(); s1 = splitMix(); s2 = splitMix(); s3 = splitMix()
    }

    public mutating func next() -> UInt64 {
        let result = ((s1 &* 5) << 7 | (s1 &* 5) >> 57) &* 9
        let t = s1 << 17
        s2 ^= s0; s3 ^= s1; s1 ^= s2; s0 ^= s3
        s2 ^= t
        s3 = (s3 << 45) | (s3 >> 19)
        return result
    }

    /// Uniform in [0, 1) with 53 random bits.
    public mutating func nextUniform() -> Double { Double(next() >> 11) * 0x1p-53 }

    /// Uniform in [-1, 1).
    public mutating func nextSigned() -> Float { Float(nextUniform() * 2 - 1) }
}

public struct SamplingParameters: Codable, Sendable, Equatable {
    /// 0 = greedy. Logits are divided by it before the filters below.
    public var temperature: Float
    /// Keep the k most likely tokens; 0 = off.
    public var topK: Int
    /// Keep the smallest set of most likely tokens whose probability reaches topP; 1 = off.
    public var topP: Float
    /// Drop tokens whose probability is below minP × the best one's; 0 = off.
    public var minP: Float
    /// CTRL-style: a logit of a recent token is divided by it when positive, multiplied when negative; 1 = off.
    public var repetitionPenalty: Float
    /// OpenAI style: subtracted once from the logit of every recent token; 0 = off.
    public var presencePenalty: Float
    /// OpenAI style: subtracted per occurrence of a recent token; 0 = off.
    public var frequencyPenalty: Float
    /// How many of the latest tokens (prompt and generated) the penalties look at (llama.cpp: 64).
    public var penaltyWindow: Int
    /// Seed of this sequence's random generator; nil draws one from the system.
    public var seed: UInt64?

    public init(
        temperature: Float = 1, topK: Int = 0, topP: Float = 1, minP: Float = 0,
        repetitionPenalty: Float = 1, presencePenalty: Float = 0, frequencyPenalty: Float = 0,
        penaltyWindow: Int = 64, seed: UInt64? = nil
    ) {
        self.temperature = temperature
        self.topK = topK
        self.topP = topP
        self.minP = minP
        self.repetitionPenalty = repetitionPenalty
        self.presencePenalty = presencePenalty
        self.frequencyPenalty = frequencyPenalty
        self.penaltyWindow = penaltyWindow
        self.seed = seed
    }

    public static let greedy = SamplingParameters(temperature: 0)

    public var isGreedy: Bool { temperature <= 0 || topK == 1 }

    var hasPenalties: Bool { repetitionPenalty != 1 || presencePenalty != 0 || frequencyPenalty != 0 }

    /// Throws when a value is out of range (they come from requests and command lines).
    public func validate() throws {
        func fail(_ what: String) throws { throw InferenceError.invalidConfiguration("sampling: \(what)") }
        if !(temperature >= 0) || !temperature.isFinite { try fail("temperature must be >= 0, found \(temperature)") }
        if topK < 0 { try fail("top-k must be >= 0, found \(topK)") }
        if !(topP > 0 && topP <= 1) { try fail("top-p must be in (0, 1], found \(topP)") }
        if !(minP >= 0 && minP <= 1) { try fail("min-p must be in [0, 1], found \(minP)") }
        if !(repetitionPenalty > 0) || !repetitionPenalty.isFinite {
            try fail("repetition penalty must be > 0, found \(repetitionPenalty)")
        }
        if !presencePenalty.isFinite || !frequencyPenalty.isFinite { try fail("penalties must be finite") }
        if penaltyWindow < 0 { try fail("penalty window must be >= 0, found \(penaltyWindow)") }
    }
}

/// The per-sequence sampling state. Scratch is kept between calls (no allocation per token once warm).
public struct Sampler: Sendable {
    public let parameters: SamplingParameters
    private var rng: SamplingRNG
    /// Last `penaltyWindow` observed tokens (ring) and their counts.
    private var recent: [Int] = []
    private var recentNext = 0
    private var counts: [Int: Int] = [:]
    /// Scratch: adjusted logits [V], candidate ids and weights.
    private var adjusted: [Float] = []
    private var candidates: [Int] = []
    private var weights: [Double] = []
    /// exp((l − max)/T) of every token (V floats, reused).
    private var allWeights: [Float] = []

    public init(parameters: SamplingParameters) {
        self.parameters = parameters
        var system = SystemRandomNumberGenerator()
        rng = SamplingRNG(seed: parameters.seed ?? system.next())
    }

    /// Records a token for the penalties (feed the prompt, then every generated token).
    public mutating func observe(_ token: Int) {
        let window = parameters.penaltyWindow
        guard window > 0, parameters.hasPenalties else { return }
        if recent.count < window {
            recent.append(token)
        } else {
            let old = recent[recentNext]
            counts[old]! -= 1
            if counts[old] == 0 { counts[old] = nil }
            recent[recentNext] = token
            recentNext = (recentNext + 1) % window
        }
        counts[token, default: 0] += 1
    }

    public mutating func observe<S: Sequence>(_ tokens: S) where S.Element == Int {
        for t in tokens { observe(t) }
    }

    public mutating func sample(_ logits: [Float]) -> Int {
        logits.withUnsafeBufferPointer { sample($0) }
    }

    /// Draws the next token from one logit row of V entries.
    public mutating func sample(_ logits: UnsafeBufferPointer<Float>) -> Int {
        let p = parameters
        let V = logits.count
        precondition(V > 0, "empty logit row")
        if p.hasPenalties && !counts.isEmpty {
            // Penalized copy; moved out of `self` while borrowed so `choose` may mutate the rest.
            var buffer = adjusted
            adjusted = []
            if buffer.count != V { buffer = Array(repeating: 0, count: V) }
            buffer.withUnsafeMutableBufferPointer { a in
                _ = a.initialize(from: logits)
                penalize(a)
            }
            let token = buffer.withUnsafeBufferPointer { choose($0) }
            adjusted = buffer
            return token
        }
        return choose(logits)
    }

    /// Applies the repetition, presence and frequency penalties of the observed tokens to `a`.
    private func penalize(_ a: UnsafeMutableBufferPointer<Float>) {
        let p = parameters
        for (token, n) in counts where token >= 0 && token < a.count {
            var l = a[token]
            if p.repetitionPenalty != 1 { l = l > 0 ? l / p.repetitionPenalty : l * p.repetitionPenalty }
            l -= p.presencePenalty + Float(n) * p.frequencyPenalty
            a[token] = l
        }
    }

    /// The distribution `sample` draws from for this row and the observed history, as V
    /// probabilities that are zero outside the tokens the filters keep (greedy: one-hot at the
    /// argmax). Speculative decoding needs it to accept or reject draft tokens. Draws nothing.
    public mutating func probabilities(_ logits: UnsafeBufferPointer<Float>) -> [Float] {
        let V = logits.count
        precondition(V > 0, "empty logit row")
        if parameters.hasPenalties && !counts.isEmpty {
            var buffer = [Float](logits)
            buffer.withUnsafeMutableBufferPointer { penalize($0) }
            return buffer.withUnsafeBufferPointer { distribution($0) }
        }
        return distribution(logits)
    }

    public mutating func probabilities(_ logits: [Float]) -> [Float] {
        logits.withUnsafeBufferPointer { probabilities($0) }
    }

    /// `choose`'s candidates and weights, written out as probabilities instead of drawn from.
    private mutating func distribution(_ row: UnsafeBufferPointer<Float>) -> [Float] {
        let p = parameters
        let V = row.count
        var out = [Float](repeating: 0, count: V)
        let best = Ops.argmax(row.baseAddress!, count: V)
        if p.isGreedy {
            out[best] = 1
            return out
        }
        candidates.removeAll(keepingCapacity: true)
        weights.removeAll(keepingCapacity: true)
        var sortByWeight = false
        if p.topK > 0 && p.topK < V {
            let inverseT = 1 / Double(p.temperature), maxLogit = Double(row[best])
            selectTopK(row, k: p.topK)
            for i in candidates.indices { weights.append(exp((Double(row[candidates[i]]) - maxLogit) * inverseT)) }
        } else {
            // The same Float weights as `choose` computes.
            var w = [Float](repeating: 0, count: V)
            let inverseT = 1 / p.temperature
            let total: Double = w.withUnsafeMutableBufferPointer { w in
                let wp = w.baseAddress!, lp = row.baseAddress!
                for i in 0..<V { wp[i] = lp[i] * inverseT }
                Ops.expShifted(wp, count: V, shift: lp[best] * inverseT)
                var total = 0.0
                for i in 0..<V { total += Double(wp[i]) }
                return total
            }
            if p.topP >= 1 && p.minP <= 0 {
                for i in 0..<V { out[i] = Float(Double(w[i]) / total) }
                return out
            }
            let floor = p.topP < 1 ? (1 - Double(p.topP)) * total / Double(V) : Double(p.minP)
            for i in 0..<V where Double(w[i]) >= floor {
                candidates.append(i)
                weights.append(Double(w[i]))
            }
            sortByWeight = true
        }
        let keep = filterCandidates(sortByWeight: sortByWeight)
        let total = weights[0..<keep].reduce(0, +)
        for i in 0..<keep { out[candidates[i]] = Float(weights[i] / total) }
        return out
    }

    private mutating func choose(_ row: UnsafeBufferPointer<Float>) -> Int {
        let p = parameters
        let V = row.count
        if p.isGreedy { return Ops.argmax(row.baseAddress!, count: V) }

        // Unnormalized probabilities w_i = exp((l_i - max) / T) of the candidates.
        let best = Ops.argmax(row.baseAddress!, count: V)
        candidates.removeAll(keepingCapacity: true)
        weights.removeAll(keepingCapacity: true)

        if p.topK > 0 && p.topK < V {
            let inverseT = 1 / Double(p.temperature), maxLogit = Double(row[best])
            selectTopK(row, k: p.topK)
            for i in candidates.indices { weights.append(exp((Double(row[candidates[i]]) - maxLogit) * inverseT)) }
        } else {
            // Every token's weight with the vectorized exp into a reused buffer: a decode step
            // samples every running sequence on the engine thread, where a Double exp per entry
            // of V = 151,936 was too slow (docs/decisions.md).
            if allWeights.count != V { allWeights = [Float](repeating: 0, count: V) }
            let inverseT = 1 / p.temperature
            var w = allWeights
            allWeights = []
            defer { allWeights = w }
            return w.withUnsafeMutableBufferPointer { w -> Int? in
                let wp = w.baseAddress!, lp = row.baseAddress!
                for i in 0..<V { wp[i] = lp[i] * inverseT }
                Ops.expShifted(wp, count: V, shift: lp[best] * inverseT)
                var total = 0.0
                for i in 0..<V { total += Double(wp[i]) }
                if p.topP >= 1 && p.minP <= 0 {
                    // Plain sampling from all V: one scan.
                    let u = rng.nextUniform() * total
                    var cumulative = 0.0
                    for i in 0..<V {
                        cumulative += Double(wp[i])
                        if u < cumulative { return i }
                    }
                    return best
                }
                // Only tokens with probability >= (1 - topP)/V can be in the nucleus: all smaller
                // ones together hold less than 1 - topP, so the larger ones already reach topP.
                // Without top-p, min-p keeps weights >= minP (the best token's weight is 1).
                let floor = p.topP < 1 ? (1 - Double(p.topP)) * total / Double(V) : Double(p.minP)
                for i in 0..<V where Double(wp[i]) >= floor {
                    candidates.append(i)
                    weights.append(Double(wp[i]))
                }
                return nil
            } ?? drawFromCandidates(sortByWeight: true)
        }
        return drawFromCandidates(sortByWeight: false)
    }

    /// Applies top-p and min-p to `candidates`/`weights` (sorted by weight first when top-p needs
    /// it) and draws one.
    private mutating func drawFromCandidates(sortByWeight: Bool) -> Int {
        let keep = filterCandidates(sortByWeight: sortByWeight)
        let total = weights[0..<keep].reduce(0, +)
        let u = rng.nextUniform() * total
        var cumulative = 0.0
        for i in 0..<keep {
            cumulative += weights[i]
            if u < cumulative { return candidates[i] }
        }
        return candidates[keep - 1]
    }

    /// Applies top-p and min-p to `candidates`/`weights`, which keep their first `returned` entries.
    private mutating func filterCandidates(sortByWeight: Bool) -> Int {
        let p = parameters
        if sortByWeight && p.topP < 1 { sortCandidatesByWeight() }

        var keep = candidates.count
        if p.topP < 1 {
            let total = weights.reduce(0, +)
            var cumulative = 0.0
            for i in 0..<keep {
                cumulative += weights[i]
                if cumulative >= Double(p.topP) * total { keep = i + 1; break }
            }
        }
        if p.minP > 0 {
            // The best token has weight 1 (exp(0)) when it survived, which it always does.
            let floor = Double(p.minP) * (weights[0..<keep].max() ?? 1)
            var j = 0
            for i in 0..<keep where weights[i] >= floor {
                candidates[j] = candidates[i]; weights[j] = weights[i]; j += 1
            }
            keep = j
        }
        return keep
    }

    /// candidates = the k largest entries of `row`, sorted descending (min-heap of size k: V log k).
    private mutating func selectTopK(_ row: UnsafeBufferPointer<Float>, k: Int) {
        var heap: [(value: Float, index: Int)] = []
        heap.reserveCapacity(k)
        func less(_ a: (value: Float, index: Int), _ b: (value: Float, index: Int)) -> Bool {
            a.value < b.value || (a.value == b.value && a.index > b.index)
        }
        func siftDown(_ start: Int) {
            var i = start
            while true {
                let l = 2 * i + 1, r = l + 1
                var m = i
                if l < heap.count && less(heap[l], heap[m]) { m = l }
                if r < heap.count && less(heap[r], heap[m]) { m = r }
                if m == i { return }
                heap.swapAt(i, m); i = m
            }
        }
        for i in 0..<row.count {
            let item = (value: row[i], index: i)
            if heap.count < k {
                heap.append(item)
                var c = heap.count - 1
                while c > 0 {
                    let parent = (c - 1) / 2
                    if less(heap[c], heap[parent]) { heap.swapAt(c, parent); c = parent } else { break }
                }
            } else if less(heap[0], item) {
                heap[0] = item
                siftDown(0)
            }
        }
        heap.sort { less($1, $0) }
        candidates.append(contentsOf: heap.map(\.index))
    }

    private mutating func sortCandidatesByWeight() {
        let order = candidates.indices.sorted {
            weights[$0] > weights[$1] || (weights[$0] == weights[$1] && candidates[$0] < candidates[$1])
        }
        candidates = order.map { candidates[$0] }
        weights = order.map { weights[$0] }
    }
}

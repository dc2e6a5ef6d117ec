// The plain reference forward pass: whole sequence at once, no cache, Float32 weights by name,
// Double accumulation, every operation written out here (its own matmul, RMSNorm, RoPE, softmax)
// so that it shares no code with the optimized path it checks.
import Foundation
import Transformer

struct ReferenceTransformer {
    let c: ModelConfiguration
    let w: [String: [Float]]

    /// Logits [T][V] for every position of `tokens`.
    func logits(_ tokens: [Int]) -> [[Float]] {
        let H = c.hiddenSize, D = c.headDim, heads = c.numAttentionHeads, kvHeads = c.numKeyValueHeads
        var x: [[Double]] = tokens.map { t in (0..<H).map { Double(w["token_embd.weight"]![t * H + $0]) } }
        for l in 0..<c.numHiddenLayers {
            let p = "blk.\(l)."
            let h = x.map { rmsNorm($0, w[p + "attn_norm.weight"]!) }
            var q = h.map { linear($0, p + "attn_q.weight", rows: heads * D) }
            var k = h.map { linear($0, p + "attn_k.weight", rows: kvHeads * D) }
            let v = h.map { linear($0, p + "attn_v.weight", rows: kvHeads * D) }.map { addBias($0, p + "attn_v.bias") }
            q = q.map { addBias($0, p + "attn_q.bias") }
            k = k.map { addBias($0, p + "attn_k.bias") }
            for t in tokens.indices {
                q[t] = rope(q[t], heads: heads, position: t)
                k[t] = rope(k[t], heads: kvHeads, position: t)
            }
            var attention = [[Double]](repeating: [Double](repeating: 0, count: heads * D), count: tokens.count)
            let group = heads / kvHeads
            for t in tokens.indices {
                for head in 0..<heads {
                    let g = head / group
                    var scores = (0...t).map { s in
                        (0..<D).reduce(0.0) { $0 + q[t][head * D + $1] * k[s][g * D + $1] } / Double(D).squareRoot()
                    }
                    scores = softmax(scores)
                    for s in 0...t {
                        for d in 0..<D { attention[t][head * D + d] += scores[s] * v[s][g * D + d] }
                    }
                }
            }
            for t in tokens.indices {
                let o = linear(attention[t], p + "attn_output.weight", rows: H)
                for i in 0..<H { x[t][i] += o[i] }
            }
            for t in tokens.indices {
                let hn = rmsNorm(x[t], w[p + "ffn_norm.weight"]!)
                let gate = linear(hn, p + "ffn_gate.weight", rows: c.intermediateSize)
                let up = linear(hn, p + "ffn_up.weight", rows: c.intermediateSize)
                let act = zip(gate, up).map { g, u in g / (1 + Foundation.exp(-g)) * u }
                let down = linear(act, p + "ffn_down.weight", rows: H)
                for i in 0..<H { x[t][i] += down[i] }
            }
        }
        let outputName = c.tieWordEmbeddings ? "token_embd.weight" : "output.weight"
        return x.map { row in linear(rmsNorm(row, w["output_norm.weight"]!), outputName, rows: c.vocabSize).map { Float($0) } }
    }

    /// y[r] = Σ_k W[r][k] x[k], W row-major [rows, x.count].
    private func linear(_ x: [Double], _ name: String, rows: Int) -> [Double] {
        let m = w[name]!, cols = x.count
        precondition(m.count == rows * cols, "\(name): \(m.count) values for [\(rows), \(cols)]")
        return (0..<rows).map { r in (0..<cols).reduce(0.0) { $0 + Double(m[r * cols + $1]) * x[$1] } }
    }

    private func addBias(_ x: [Double], _ name: String) -> [Double] {
        guard c.attentionBias, let b = w[name] else { return x }
        return zip(x, b).map { $0 + Double($1) }
    }

    private func rmsNorm(_ x: [Double], _ weight: [Float]) -> [Double] {
        let meanSquare = x.reduce(0) { $0 + $1 * $1 } / Double(x.count)
        let scale = 1 / (meanSquare + Double(c.rmsNormEps)).squareRoot()
        return zip(x, weight).map { $0 * scale * Double($1) }
    }

    /// Rotates pairs by position × theta^(-2i/D): pairs (2i, 2i+1) interleaved, (i, i+D/2) halves.
    private func rope(_ x: [Double], heads: Int, position: Int) -> [Double] {
        var y = x
        let D = c.headDim
        for head in 0..<heads {
            for i in 0..<(D / 2) {
                let angle = Double(position) * Foundation.pow(Double(c.ropeTheta), -Double(2 * i) / Double(D))
                let (a, b) = c.ropeLayout == .interleaved ? (2 * i, 2 * i + 1) : (i, i + D / 2)
                let x0 = x[head * D + a], x1 = x[head * D + b]
                y[head * D + a] = x0 * Foundation.cos(angle) - x1 * Foundation.sin(angle)
                y[head * D + b] = x0 * Foundation.sin(angle) + x1 * Foundation.cos(angle)
            }
        }
        return y
    }

    private func softmax(_ x: [Double]) -> [Double] {
        let m = x.max()!
        let e = x.map { Foundation.exp($0 - m) }
        let s = e.reduce(0, +)
        return e.map { $0 / s }
    }
}

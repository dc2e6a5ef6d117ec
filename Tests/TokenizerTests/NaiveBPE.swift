import Foundation
import Tokenizer

/// The plain reference for byte-level BPE on one word, straight from the definition: repeatedly
/// merge the adjacent pair with the lowest merge rank (leftmost among equals), with string keys.
final class NaiveBPE: Sendable {
    let rank: [String: Int]
    let ids: [String: Int]
    let byteToText: [String]

    init(_ d: TokenizerDescription) {
        var rank: [String: Int] = [:]
        for (r, m) in d.merges.enumerated() where rank[m] == nil { rank[m] = r }
        self.rank = rank
        var ids: [String: Int] = [:]
        for (i, t) in d.tokens.enumerated() where d.tokenTypes[i] == 1 { ids[t] = i }
        self.ids = ids
        byteToText = NaiveBPE.byteLevelAlphabet
    }

    /// GPT-2's byte -> printable scalar table, written out independently of the module's:
    /// printable Latin-1 bytes stand for themselves, the others move to U+0100... in byte order.
    static let byteLevelAlphabet: [String] = {
        let printable = Set(Array(0x21...0x7E) + Array(0xA1...0xAC) + Array(0xAE...0xFF))
        var texts = [String](repeating: "", count: 256)
        var moved = 0
        for b in 0..<256 {
            if printable.contains(b) {
                texts[b] = String(Unicode.Scalar(UInt8(b)))
            } else {
                texts[b] = String(Unicode.Scalar(UInt32(256 + moved))!)
                moved += 1
            }
        }
        return texts
    }()

    func encodeWord(_ bytes: [UInt8]) -> [Int] {
        var parts = bytes.map { byteToText[Int($0)] }
        while parts.count > 1 {
            var best: (rank: Int, index: Int)?
            for i in 0..<(parts.count - 1) {
                if let r = rank[parts[i] + " " + parts[i + 1]], best == nil || r < best!.rank { best = (r, i) }
            }
            guard let (_, i) = best else { break }
            parts[i] += parts[i + 1]
            parts.remove(at: i + 1)
        }
        return parts.map { ids[$0] ?? -1 }
    }

    private static let instance = Result<NaiveBPE, any Error> { NaiveBPE(try defaultTokenizerDescription()) }
    static func shared() throws -> NaiveBPE { try instance.get() }
}

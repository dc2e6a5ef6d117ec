/// SentencePiece BPE (Llama-2 family, GGUF `tokenizer.ggml.model = llama`), as llama.cpp runs it:
/// spaces become `▁` (U+2581), optionally one `▁` is put in front; the text starts as one symbol per
/// Unicode scalar; the adjacent pair whose concatenation is a vocabulary piece with the HIGHEST score
/// is merged first (ties: leftmost first), until no pair forms a piece. A final symbol that is not a
/// piece (a character missing from the vocabulary) falls back to its UTF-8 bytes as `<0xNN>` tokens,
/// or to the unknown token when the vocabulary has no byte tokens.
struct SentencePieceBPE {
    /// Piece text (UTF-8, with `▁`) -> id, for normal and user-defined tokens only: control, unknown,
    /// unused and byte tokens are never produced from text.
    let pieces: ByteStringMap
    let scores: [Float]
    /// byte -> id of `<0xNN>`, -1 if absent. [256]
    let byteTokens: [Int32]
    let unknownTokenId: Int32?

    private struct Bigram {
        var score: Float
        var left: Int32
        var size: Int32  // byte length of the pair when pushed (stale if the symbols changed since)
        var id: Int32

        /// Heap order: higher score first, then leftmost.
        func before(_ other: Bigram) -> Bool {
            score > other.score || (score == other.score && left < other.left)
        }
    }

    /// Appends the tokens of `text` (raw UTF-8, spaces not yet escaped) to `out`.
    func encode(_ text: UnsafeBufferPointer<UInt8>, addSpacePrefix: Bool, out: inout [Int]) {
        // Escape: ' ' -> "▁" (E2 96 81).
        var bytes: [UInt8] = []
        bytes.reserveCapacity(text.count + 3)
        if addSpacePrefix { bytes.append(contentsOf: [0xE2, 0x96, 0x81]) }
        for b in text {
            if b == 0x20 { bytes.append(contentsOf: [0xE2, 0x96, 0x81]) } else { bytes.append(b) }
        }
        guard !bytes.isEmpty else { return }

        // Symbols: byte ranges start[k] ..< start[k] + length[k], in a linked list.
        var start: [Int32] = [], length: [Int32] = []
        var i = 0
        while i < bytes.count {
            let b = bytes[i]
            let n = b < 0x80 ? 1 : b < 0xE0 ? 2 : b < 0xF0 ? 3 : 4
            start.append(Int32(i))
            length.append(Int32(min(n, bytes.count - i)))
            i += n
        }
        let count = start.count
        var next = (0..<count).map { Int32($0 + 1) }
        var previous = (0..<count).map { Int32($0 - 1) }
        next[count - 1] = -1

        var heap: [Bigram] = []
        bytes.withUnsafeBufferPointer { buffer in
            let base = buffer.baseAddress!
            func tryAdd(_ left: Int, _ right: Int) {
                guard left >= 0, right >= 0 else { return }
                let size = Int(length[left] + length[right])
                guard let id = pieces.get(base + Int(start[left]), size) else { return }
                push(&heap, Bigram(score: scores[Int(id)], left: Int32(left), size: Int32(size), id: id))
            }
            for k in 1..<count { tryAdd(k - 1, k) }
            while let bigram = pop(&heap) {
                let left = Int(bigram.left)
                let right = Int(next[left])
                guard length[left] > 0, right >= 0, length[left] + length[right] == bigram.size else { continue }
                length[left] += length[right]
                length[right] = 0
                next[left] = next[right]
                if next[right] >= 0 { previous[Int(next[right])] = Int32(left) }
                tryAdd(Int(previous[left]), left)
                tryAdd(left, Int(next[left]))
            }
            var k = 0
            while k >= 0 {
                let p = base + Int(start[k])
                let n = Int(length[k])
                if let id = pieces.get(p, n) {
                    out.append(Int(id))
                } else if (0..<n).allSatisfy({ byteTokens[Int(p[$0])] >= 0 }) {
                    for b in 0..<n { out.append(Int(byteTokens[Int(p[b])])) }
                } else if let unknownTokenId {
                    out.append(Int(unknownTokenId))  // one unknown token per unknown character
                }
                k = Int(next[k])
            }
        }
    }

    private func push(_ heap: inout [Bigram], _ item: Bigram) {
        heap.append(item)
        var i = heap.count - 1
        while i > 0 {
            let parent = (i - 1) / 2
            guard heap[i].before(heap[parent]) else { break }
            heap.swapAt(parent, i)
            i = parent
        }
    }

    private func pop(_ heap: inout [Bigram]) -> Bigram? {
        guard let last = heap.popLast() else { return nil }
        guard !heap.isEmpty else { return last }
        let top = heap[0]
        heap[0] = last
        var i = 0
        while true {
            let l = 2 * i + 1
            if l >= heap.count { break }
            var m = l
            if l + 1 < heap.count && heap[l + 1].before(heap[l]) { m = l + 1 }
            guard heap[m].before(heap[i]) else { break }
            heap.swapAt(i, m)
            i = m
        }
        return top
    }
}

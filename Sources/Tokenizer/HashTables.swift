import Foundation  // memcmp

/// Open-addressing hash tables specialised for the encoder's two look-ups: byte strings (vocabulary,
/// word cache) and token pairs (merge ranks). Swift's `Dictionary` would need an allocated key per
/// look-up and a SipHash; these hash in place and probe linearly in a power-of-two slot array.

@inline(__always)
func hashBytes(_ p: UnsafePointer<UInt8>, _ n: Int) -> UInt64 {
    // FNV-1a: words are a handful of bytes, so a byte loop beats block hashing set-up.
    var h: UInt64 = 0xcbf2_9ce4_8422_2325
    for i in 0..<n { h = (h ^ UInt64(p[i])) &* 0x0000_0100_0000_01B3 }
    return (h ^ (h >> 32)) &* 0x9E37_79B9_7F4A_7C15  // mixed: low bits pick the slot, high bits are the tag
}

/// Byte comparison inlined for the short keys of the word cache (a memcmp call costs more).
@inline(__always)
func equalBytes(_ a: UnsafePointer<UInt8>, _ b: UnsafePointer<UInt8>, _ n: Int) -> Bool {
    var i = 0
    while i + 8 <= n {
        if UnsafeRawPointer(a + i).loadUnaligned(as: UInt64.self) != UnsafeRawPointer(b + i).loadUnaligned(as: UInt64.self) {
            return false
        }
        i += 8
    }
    while i < n {
        if a[i] != b[i] { return false }
        i += 1
    }
    return true
}

/// Stands in for the base address of an empty key (never dereferenced: the length is 0).
nonisolated(unsafe) private let emptyKey = UnsafePointer<UInt8>(bitPattern: 0x10)!

/// Byte string -> Int32. Keys are copied into one arena. A slot holds `tag << 32 | (entry + 1)`
/// (0: empty), where the tag is the upper half of the key's hash, so a probe touches the key bytes
/// only when the tags agree.
struct ByteStringMap {
    private struct Entry {
        var start: Int32  // offset of the key in `arena`
        var length: Int32
        var value: Int32
    }
    private var arena: [UInt8] = []
    private var entries: [Entry] = []
    private var slots: [UInt64]
    private var mask: Int

    init(capacity: Int = 16) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        slots = [UInt64](repeating: 0, count: size)
        mask = size - 1
    }

    var count: Int { entries.count }

    func get(_ p: UnsafePointer<UInt8>, _ n: Int) -> Int32? {
        let h = hashBytes(p, n)
        let tag = h >> 32
        var slot = Int(truncatingIfNeeded: h) & mask
        return arena.withUnsafeBufferPointer { a in
            entries.withUnsafeBufferPointer { e in
                slots.withUnsafeBufferPointer { slots in
                    while true {
                        let s = slots[slot]
                        if s == 0 { return nil }
                        if s >> 32 == tag {
                            let entry = e[Int(s & 0xFFFF_FFFF) - 1]
                            if Int(entry.length) == n && equalBytes(a.baseAddress! + Int(entry.start), p, n) {
                                return entry.value
                            }
                        }
                        slot = (slot + 1) & mask
                    }
                }
            }
        }
    }

    func get(_ bytes: [UInt8]) -> Int32? {
        bytes.withUnsafeBufferPointer { b in get(b.baseAddress ?? emptyKey, b.count) }
    }

    /// Inserts or overwrites.
    mutating func set(_ p: UnsafePointer<UInt8>, _ n: Int, _ value: Int32) {
        if (entries.count + 1) * 2 > slots.count { grow() }
        let h = hashBytes(p, n)
        let tag = h >> 32
        var slot = Int(truncatingIfNeeded: h) & mask
        while true {
            let s = slots[slot]
            if s == 0 { break }
            if s >> 32 == tag {
                let index = Int(s & 0xFFFF_FFFF) - 1
                let entry = entries[index]
                if Int(entry.length) == n && arena.withUnsafeBufferPointer({ memcmp($0.baseAddress! + Int(entry.start), p, n) }) == 0 {
                    entries[index].value = value
                    return
                }
            }
            slot = (slot + 1) & mask
        }
        entries.append(Entry(start: Int32(arena.count), length: Int32(n), value: value))
        slots[slot] = tag << 32 | UInt64(entries.count)
        arena.append(contentsOf: UnsafeBufferPointer(start: p, count: n))
    }

    mutating func set(_ bytes: [UInt8], _ value: Int32) {
        bytes.withUnsafeBufferPointer { b in set(b.baseAddress ?? emptyKey, b.count, value) }
    }

    mutating func removeAll() {
        arena.removeAll(keepingCapacity: true)
        entries.removeAll(keepingCapacity: true)
        for i in slots.indices { slots[i] = 0 }
    }

    private mutating func grow() {
        let size = slots.count * 2
        var newSlots = [UInt64](repeating: 0, count: size)
        mask = size - 1
        arena.withUnsafeBufferPointer { a in
            for (index, entry) in entries.enumerated() {
                let h = hashBytes(a.baseAddress! + Int(entry.start), Int(entry.length))
                var slot = Int(truncatingIfNeeded: h) & mask
                while newSlots[slot] != 0 { slot = (slot + 1) & mask }
                newSlots[slot] = (h >> 32) << 32 | UInt64(index + 1)
            }
        }
        slots = newSlots
    }
}

/// (left id, right id) -> (rank, merged id) of a BPE merge. Keys pack the pair into 64 bits;
/// `UInt64.max` marks an empty slot (ids are < 2^31, so no real key has that value). Key and value
/// sit side by side (`table[2s]`, `table[2s+1]`): a look-up is one cache miss, and the table
/// (several MB for 151k merges) does not fit in cache.
///
/// Most look-ups ask about pairs that never merge (adjacent characters of running text); a bit
/// filter of 2^21 bits (256 KB, cache-resident) answers most of those without touching the table.
struct PairMap {
    private static let filterBits = 21
    private var filter = [UInt64](repeating: 0, count: (1 << PairMap.filterBits) / 64)
    private var table: [UInt64]
    private var mask: Int
    private(set) var count = 0

    init(capacity: Int) {
        var size = 16
        while size < capacity * 2 { size <<= 1 }
        table = [UInt64](repeating: .max, count: 2 * size)
        mask = size - 1
    }

    @inline(__always)
    private static func slot(_ key: UInt64, _ mask: Int) -> Int {
        Int(truncatingIfNeeded: (key &* 0x9E37_79B9_7F4A_7C15) >> 32) & mask
    }

    @inline(__always)
    private static func filterBit(_ key: UInt64) -> Int {
        Int(truncatingIfNeeded: (key &* 0xD6E8_FEB8_6659_FD93) >> (64 - filterBits))
    }

    /// Inserts unless the pair is already present (the first, lowest-rank merge of a pair wins).
    mutating func insertIfAbsent(left: Int32, right: Int32, rank: Int32, merged: Int32) {
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        let bit = PairMap.filterBit(key)
        filter[bit >> 6] |= 1 << UInt64(bit & 63)
        var s = PairMap.slot(key, mask)
        while table[2 * s] != .max {
            if table[2 * s] == key { return }
            s = (s + 1) & mask
        }
        table[2 * s] = key
        table[2 * s + 1] = UInt64(UInt32(bitPattern: rank)) << 32 | UInt64(UInt32(bitPattern: merged))
        count += 1
    }

    /// Packed `rank << 32 | merged`, or `UInt64.max` when the pair never merges.
    @inline(__always)
    func lookup(_ left: Int32, _ right: Int32) -> UInt64 {
        let key = UInt64(UInt32(bitPattern: left)) << 32 | UInt64(UInt32(bitPattern: right))
        let bit = PairMap.filterBit(key)
        if filter[bit >> 6] & (1 << UInt64(bit & 63)) == 0 { return .max }
        var s = PairMap.slot(key, mask)
        return table.withUnsafeBufferPointer { t in
            while true {
                let k = t[2 * s]
                if k == key { return t[2 * s + 1] }
                if k == .max { return .max }
                s = (s + 1) & mask
            }
        }
    }
}

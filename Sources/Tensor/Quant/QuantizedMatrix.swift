// A rows × cols weight matrix in one of the `WeightFormat`s, borrowed from a mapped file or owned.
// Shapes: W [rows, cols], cols contiguous (the nn.Linear convention: y = x · Wᵀ).

/// Owner of a quantized matrix's bytes when it was built in memory (quantized from Float32).
public final class QuantizedStorage: @unchecked Sendable {
    public let bytes: UnsafeMutableRawPointer
    public let count: Int

    public init(byteCount: Int) {
        count = byteCount
        // 64-byte alignment: rows are not aligned anyway (34/176/144-byte blocks), but the start is.
        bytes = UnsafeMutableRawPointer.allocate(byteCount: max(byteCount, 1), alignment: 64)
        bytes.initializeMemory(as: UInt8.self, repeating: 0, count: max(byteCount, 1))
    }

    deinit { bytes.deallocate() }
}

public struct QuantizedMatrix: @unchecked Sendable {
    public let format: WeightFormat
    public let rows: Int
    public let cols: Int
    /// Start of row 0; row r starts at `data + r * bytesPerRow`.
    public let data: UnsafeRawPointer
    /// Keeps `data` alive (a mapped file or a `QuantizedStorage`).
    public let owner: AnyObject?
    /// Bytes per row, computed once: the kernels find every row through `rowPointer`.
    public let bytesPerRow: Int

    /// Borrows `rows * bytesPerRow(format, cols)` bytes at `data` (no copy, validates only shapes).
    public init(format: WeightFormat, rows: Int, cols: Int, data: UnsafeRawPointer, owner: AnyObject?) {
        precondition(
            rows > 0 && format.supports(cols: cols),
            "\(format) matrix needs rows > 0 and cols \(format.columnRequirement); got \(rows)×\(cols)")
        self.format = format
        self.rows = rows
        self.cols = cols
        self.data = data
        self.owner = owner
        bytesPerRow = format.bytesPerRow(cols: cols)
    }

    public static func bytesPerRow(format: WeightFormat, cols: Int) -> Int {
        format.bytesPerRow(cols: cols)
    }

    public var byteCount: Int { rows * bytesPerRow }

    @inline(__always)
    public func rowPointer(_ r: Int) -> UnsafeRawPointer { data + r * bytesPerRow }

    /// Quantizes row-major Float32 weights [rows, cols] into a new owned matrix.
    /// int8: per group scale = max|w|/127 (rounded to Float16), q = round(w/scale).
    /// int5: per group d = max|w|/15 (Float16), q − 16 = round(w/d) (see `quantizeInt5Row`).
    /// int6: per sub-block of 16 a scale max|w|/31 expressed as d·sc (see `quantizeInt6Row`).
    /// int4: see `quantizeInt4Row` in Int4Quantizer.swift (a grid that covers each group's range, error
    /// ≤ half a step).
    public static func quantize(_ w: UnsafePointer<Float>, rows: Int, cols: Int, format: WeightFormat) -> QuantizedMatrix {
        precondition(
            rows > 0 && format.supports(cols: cols),
            "cannot store \(rows)×\(cols) as \(format): it needs cols \(format.columnRequirement)")
        let stride = format.bytesPerRow(cols: cols)
        let storage = QuantizedStorage(byteCount: rows * stride)
        for r in 0..<rows {
            let src = w + r * cols
            let dst = storage.bytes + r * stride
            switch format {
            case .f32:
                dst.copyMemory(from: src, byteCount: cols * 4)
            case .f16:
                let h = dst.assumingMemoryBound(to: UInt16.self)
                for i in 0..<cols { h[i] = Float16(src[i]).bitPattern }
            case .int8:
                quantizeInt8Row(src, cols: cols, into: dst)
            case .int5:
                quantizeInt5Row(src, cols: cols, into: dst)
            case .int4:
                quantizeInt4Row(src, cols: cols, into: dst)
            case .int6:
                quantizeInt6Row(src, cols: cols, into: dst)
            }
        }
        return QuantizedMatrix(format: format, rows: rows, cols: cols, data: UnsafeRawPointer(storage.bytes), owner: storage)
    }

    /// Writes row `r` as Float32 into `out[0..<cols]`.
    public func dequantizeRow(_ r: Int, into out: UnsafeMutablePointer<Float>) {
        precondition(r >= 0 && r < rows, "row \(r) outside 0..<\(rows)")
        let row = rowPointer(r)
        switch format {
        case .f32:
            out.update(from: row.assumingMemoryBound(to: Float.self), count: cols)
        case .f16:
            let h = row.assumingMemoryBound(to: UInt16.self)
            for i in 0..<cols { out[i] = Float(Float16(bitPattern: h[i])) }
        case .int8:
            for g in 0..<cols / 32 {
                let block = row + g * Int8Block.bytes
                let d = loadHalf(block)
                let q = (block + Int8Block.quantsOffset).assumingMemoryBound(to: Int8.self)
                for i in 0..<32 { out[g * 32 + i] = d * Float(q[i]) }
            }
        case .int5:
            for g in 0..<cols / 32 {
                let sb = row + (g / 8) * Int5Superblock.bytes
                let d = Float(Float16(bitPattern: Int5Superblock.scaleBits(sb, g % 8)))
                for i in 0..<32 { out[g * 32 + i] = d * Float(Int(Int5Superblock.code(sb, g % 8, i)) - 16) }
            }
        case .int4:
            for g in 0..<cols / 32 {
                let sb = row + (g / 8) * Int4Superblock.bytes
                let j = g % 8
                let d = loadHalf(sb + Int4Superblock.dOffset)
                let dmin = loadHalf(sb + Int4Superblock.dminOffset)
                let (sc, m) = Int4Superblock.scaleMin((sb + Int4Superblock.scalesOffset).assumingMemoryBound(to: UInt8.self), j)
                let scale = d * Float(sc), offset = dmin * Float(m)
                let nib = (sb + Int4Superblock.nibblesOffset + 16 * j).assumingMemoryBound(to: UInt8.self)
                for i in 0..<16 {
                    out[g * 32 + i] = scale * Float(nib[i] & 0xF) - offset
                    out[g * 32 + i + 16] = scale * Float(nib[i] >> 4) - offset
                }
            }
        case .int6:
            // (d·sc)·(q − 32) in this order, as ggml's dequantize_row_q6_K: bit-identical values.
            for b in 0..<cols / 256 {
                let sb = row + b * Int6Superblock.bytes
                let d = Float(Float16(bitPattern: Int6Superblock.dBits(sb)))
                for s in 0..<16 {
                    let scale = d * Float(Int6Superblock.scale(sb, s))
                    for i in 16 * s..<16 * s + 16 { out[256 * b + i] = scale * Float(Int(Int6Superblock.code(sb, i)) - 32) }
                }
            }
        }
    }

    /// All rows as a Float32 [rows, cols] tensor.
    public func dequantize() -> Tensor {
        let t = Tensor(zeros: [rows, cols])
        let p = t.pointer
        for r in 0..<rows { dequantizeRow(r, into: p + r * cols) }
        return t
    }
}

@inline(__always)
func loadHalf(_ p: UnsafeRawPointer) -> Float {
    Float(Float16(bitPattern: p.loadUnaligned(as: UInt16.self)))
}

@inline(__always)
func storeHalf(_ value: Float, _ p: UnsafeMutableRawPointer) {
    p.storeBytes(of: Float16(value).bitPattern, as: UInt16.self)
}

/// One int5 row: per group of 32, d = max|w|/15 stored as Float16, q − 16 = round(w/d) within
/// −16...15. (ggml's Q5_0 quantizer uses d = −max/16 to reach the −16 level with the group's
/// largest value; its opposite then clamps a full step short. ±15 keeps every weight within half
/// a step, which is what the round-trip tests check.)
func quantizeInt5Row(_ w: UnsafePointer<Float>, cols: Int, into dst: UnsafeMutableRawPointer) {
    let groups = cols / 32
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: cols) { codes in
        withUnsafeTemporaryAllocation(of: UInt16.self, capacity: groups) { scales in
            for g in 0..<groups {
                let x = w + g * 32
                var amax: Float = 0
                for i in 0..<32 { amax = max(amax, abs(x[i])) }
                let d = Float(Float16(amax / 15))
                scales[g] = Float16(d).bitPattern
                let inv: Float = d > 0 ? 1 / d : 0
                for i in 0..<32 { codes[g * 32 + i] = UInt8(max(-16, min(15, (x[i] * inv).rounded(.toNearestOrEven))) + 16) }
            }
            Int5Superblock.packRow(codes: codes.baseAddress!, scales: scales.baseAddress!, cols: cols, into: dst)
        }
    }
}

/// One int8 row: per group of 32, scale d = max|w|/127 stored as Float16, q = round(w/d) clamped
/// to ±127 (the Float16 rounding of d can make |w|/d exceed 127 by a hair).
func quantizeInt8Row(_ w: UnsafePointer<Float>, cols: Int, into dst: UnsafeMutableRawPointer) {
    for g in 0..<cols / 32 {
        let x = w + g * 32
        var amax: Float = 0
        for i in 0..<32 { amax = max(amax, abs(x[i])) }
        let block = dst + g * Int8Block.bytes
        let d = Float(Float16(amax / 127))
        storeHalf(d, block)
        let q = (block + Int8Block.quantsOffset).assumingMemoryBound(to: Int8.self)
        let inv: Float = d > 0 ? 1 / d : 0
        for i in 0..<32 {
            q[i] = Int8(max(-127, min(127, (x[i] * inv).rounded(.toNearestOrEven))))
        }
    }
}

/// One int6 row: per sub-block of 16 the scale f = max|w|/31 (codes q − 32 in −31...31 keep every
/// weight within half a step), per superblock d = max f / 127 as Float16 and sc = round(f / d), then
/// q − 32 = round(w / (d·sc)) within −32...31. (A simple form of ggml's Q6_K quantizer, for tests
/// and re-quantization; imports from Q6_K are exact repacks.)
func quantizeInt6Row(_ w: UnsafePointer<Float>, cols: Int, into dst: UnsafeMutableRawPointer) {
    let superblocks = cols / 256
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: cols) { codes in
        withUnsafeTemporaryAllocation(of: Int8.self, capacity: cols / 16) { scales in
            withUnsafeTemporaryAllocation(of: UInt16.self, capacity: superblocks) { ds in
                for b in 0..<superblocks {
                    var f = [Float](repeating: 0, count: 16)
                    for s in 0..<16 {
                        var amax: Float = 0
                        for i in 0..<16 { amax = max(amax, abs(w[256 * b + 16 * s + i])) }
                        f[s] = amax / 31
                    }
                    let d = Float(Float16(f.max()! / 127))
                    ds[b] = Float16(d).bitPattern
                    for s in 0..<16 {
                        let sc = d > 0 ? max(-128, min(127, (f[s] / d).rounded(.toNearestOrEven))) : 0
                        scales[16 * b + s] = Int8(sc)
                        let step = d * sc
                        let inverse: Float = step != 0 ? 1 / step : 0
                        for i in 16 * s..<16 * s + 16 {
                            let q = max(-32, min(31, (w[256 * b + i] * inverse).rounded(.toNearestOrEven)))
                            codes[256 * b + i] = UInt8(Int(q) + 32)
                        }
                    }
                }
                Int6Superblock.packRow(
                    codes: codes.baseAddress!, scales: scales.baseAddress!, d: ds.baseAddress!, cols: cols, into: dst)
            }
        }
    }
}

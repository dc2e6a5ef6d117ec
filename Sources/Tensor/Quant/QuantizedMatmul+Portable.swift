// Portable kernels: plain Swift loops over unsafe pointers with wrapping arithmetic, which LLVM
// auto-vectorizes (see docs/kernels.md: the `Int32(Int16(a) &* Int16(b))` form is the one that stays
// vectorized once inlined). They run on every machine and are the fallback when no intrinsic path
// is compiled in. Shapes as in QuantizedMatmul.swift: weights [N, K], activation codes [M, K],
// y [M, N]; each call handles output rows `rows` for activation rows `ms`.

/// Σ a[i]·b[i] over 32 int8 pairs, exact in Int32 (|a·b| ≤ 128·127 fits Int16).
@inline(__always)
func dot32(_ a: UnsafePointer<Int8>, _ b: UnsafePointer<Int8>) -> Int32 {
    var s: Int32 = 0
    for i in 0..<32 { s &+= Int32(Int16(a[i]) &* Int16(b[i])) }
    return s
}

/// Σ u[i]·b[i] over 32 pairs with u unsigned 0...31 (int4 and int5 codes), exact in Int32.
@inline(__always)
func dot32(_ u: UnsafePointer<UInt8>, _ b: UnsafePointer<Int8>) -> Int32 {
    var s: Int32 = 0
    for i in 0..<32 { s &+= Int32(Int16(u[i]) &* Int16(b[i])) }
    return s
}

/// M is walked in blocks of 4 so that one loaded weight group feeds four activation rows.
func portableInt8(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>,
    rows: Range<Int>, ms: Range<Int>
) {
    let groups = w.cols / 32, cols = w.cols
    for n in rows {
        let row = w.rowPointer(n)
        var m0 = ms.lowerBound
        while m0 < ms.upperBound {
            let mb = min(4, ms.upperBound - m0)
            var acc = SIMD4<Float>()
            for g in 0..<groups {
                let block = row + g * Int8Block.bytes
                let qw = (block + Int8Block.quantsOffset).assumingMemoryBound(to: Int8.self)
                let dw = loadHalf(block)
                var dots = SIMD4<Int32>(), sx = SIMD4<Float>()
                for j in 0..<mb {
                    dots[j] = dot32(qw, a.codes + (m0 + j) * cols + g * 32)
                    sx[j] = a.scales[(m0 + j) * groups + g]
                }
                acc += SIMD4<Float>(dots) * (sx * dw)
            }
            for j in 0..<mb { y[(m0 + j) * w.rows + n] = acc[j] }
            m0 += mb
        }
    }
}

/// int4 and int5 (unsigned codes with an offset): each row's codes are unpacked once into a K-byte
/// buffer (weight order) with per-group `scale` and `offset` (w = scale·q − offset), then reused
/// for every activation row; the offset term uses the per-group activation sums.
func portableUnsignedCodes(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>,
    rows: Range<Int>, ms: Range<Int>,
    unpackRow: (
        _ row: UnsafeRawPointer, _ codes: UnsafeMutablePointer<UInt8>,
        _ scale: UnsafeMutablePointer<Float>, _ offset: UnsafeMutablePointer<Float>
    ) -> Void
) {
    let groups = w.cols / 32, cols = w.cols
    withUnsafeTemporaryAllocation(of: UInt8.self, capacity: cols) { buffer in
        let unpacked = buffer.baseAddress!
        withUnsafeTemporaryAllocation(of: Float.self, capacity: 2 * groups) { scaleBuffer in
            let scale = scaleBuffer.baseAddress!, offset = scale + groups
            for n in rows {
                unpackRow(w.rowPointer(n), unpacked, scale, offset)
                var m0 = ms.lowerBound
                while m0 < ms.upperBound {
                    let mb = min(4, ms.upperBound - m0)
                    var acc = SIMD4<Float>()
                    for g in 0..<groups {
                        var dots = SIMD4<Int32>(), sx = SIMD4<Float>(), sums = SIMD4<Float>()
                        for j in 0..<mb {
                            dots[j] = dot32(UnsafePointer(unpacked + g * 32), a.codes + (m0 + j) * cols + g * 32)
                            sx[j] = a.scales[(m0 + j) * groups + g]
                            sums[j] = a.sums[(m0 + j) * groups + g]
                        }
                        acc += SIMD4<Float>(dots) * (sx * scale[g]) - offset[g] * sums
                    }
                    for j in 0..<mb { y[(m0 + j) * w.rows + n] = acc[j] }
                    m0 += mb
                }
            }
        }
    }
}

/// int4: scale d·sc[g], offset dmin·m[g], codes the nibbles (0...15).
func portableInt4(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>,
    rows: Range<Int>, ms: Range<Int>
) {
    portableUnsignedCodes(w, a, y, rows: rows, ms: ms) { row, codes, scale, offset in
        for g in 0..<w.cols / 32 {
            let sb = row + (g / 8) * Int4Superblock.bytes
            let j = g % 8
            let (sc, mn) = Int4Superblock.scaleMin((sb + Int4Superblock.scalesOffset).assumingMemoryBound(to: UInt8.self), j)
            scale[g] = loadHalf(sb + Int4Superblock.dOffset) * Float(sc)
            offset[g] = loadHalf(sb + Int4Superblock.dminOffset) * Float(mn)
            let nib = (sb + Int4Superblock.nibblesOffset + 16 * j).assumingMemoryBound(to: UInt8.self)
            for i in 0..<16 {
                codes[g * 32 + i] = nib[i] & 0xF
                codes[g * 32 + i + 16] = nib[i] >> 4
            }
        }
    }
}

/// int5: w = d·(q − 16): scale d, offset 16·d, codes 0...31.
func portableInt5(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>,
    rows: Range<Int>, ms: Range<Int>
) {
    portableUnsignedCodes(w, a, y, rows: rows, ms: ms) { row, codes, scale, offset in
        for g in 0..<w.cols / 32 {
            let sb = row + (g / 8) * Int5Superblock.bytes
            scale[g] = Float(Float16(bitPattern: Int5Superblock.scaleBits(sb, g % 8)))
            offset[g] = 16 * scale[g]
            for i in 0..<32 { codes[g * 32 + i] = Int5Superblock.code(sb, g % 8, i) }
        }
    }
}

/// Σ c[i]·x[i] over 16 pairs with c signed −32...31 (int6 codes minus 32), exact in Int32.
@inline(__always)
func dot16(_ c: UnsafePointer<Int8>, _ x: UnsafePointer<Int8>) -> Int32 {
    var s: Int32 = 0
    for i in 0..<16 { s &+= Int32(Int16(c[i]) &* Int16(x[i])) }
    return s
}

/// int6: each row is unpacked once into signed codes q − 32 (weight order) and its sub-block scales,
/// then per superblock and activation row Σ_s sc[s] · Σ_i (q − 32)·x stays in Int32 (≤ 16 · 128 ·
/// 16 · 32 · 127 < 2^31) and is scaled once by d · (the superblock's activation scale).
func portableInt6(
    _ w: QuantizedMatrix, _ a: QuantizedActivations, _ y: UnsafeMutablePointer<Float>,
    rows: Range<Int>, ms: Range<Int>
) {
    let groups = w.cols / 32, cols = w.cols, superblocks = cols / 256
    withUnsafeTemporaryAllocation(of: Int8.self, capacity: cols) { codeBuffer in
        withUnsafeTemporaryAllocation(of: Int32.self, capacity: cols / 16) { scaleBuffer in
            withUnsafeTemporaryAllocation(of: Float.self, capacity: superblocks) { dBuffer in
                let codes = codeBuffer.baseAddress!, scales = scaleBuffer.baseAddress!, ds = dBuffer.baseAddress!
                for n in rows {
                    let row = w.rowPointer(n)
                    for b in 0..<superblocks {
                        let sb = row + b * Int6Superblock.bytes
                        ds[b] = Float(Float16(bitPattern: Int6Superblock.dBits(sb)))
                        for s in 0..<16 { scales[16 * b + s] = Int32(Int6Superblock.scale(sb, s)) }
                        for i in 0..<256 { codes[256 * b + i] = Int8(Int(Int6Superblock.code(sb, i)) - 32) }
                    }
                    for m in ms {
                        let x = a.codes + m * cols
                        var acc: Float = 0
                        for b in 0..<superblocks {
                            var total: Int32 = 0
                            for s in 16 * b..<16 * b + 16 { total &+= scales[s] &* dot16(codes + 16 * s, x + 16 * s) }
                            acc += Float(total) * (ds[b] * a.scales[m * groups + 8 * b])
                        }
                        y[m * w.rows + n] = acc
                    }
                }
            }
        }
    }
}

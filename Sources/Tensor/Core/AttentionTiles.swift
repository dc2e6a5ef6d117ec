// The two matrix products of tiled (flash-style) attention, as register-blocked Float32 kernels:
//   scores   S[R, n] = Q[R, D] · Kᵀ     with the key tile stored transposed, Kᵀ[D, n]
//   values   O[R, D] += P[R, n] · V[n, D]
// R counts query rows (tokens × the query heads that share one key/value head), n keys of a tile.
// The caller does the online softmax between them (running max and sum per row); nothing here
// knows about heads, masks or caches.
//
// Why not one dot product per (query, key) as before: each 64-wide dot ended in a horizontal sum
// and each key's value row was read, multiplied and written back per query, ~1/5 of FMA peak. Here
// a 4 × 16 block of scores keeps 8 ymm accumulators: per depth step two key loads and four
// broadcast query values feed eight vfmadd231ps; a 4 × 16 block of outputs likewise (two value
// loads, four broadcast probabilities, eight FMAs per key). Shapes: R a multiple of 4, n and D
// multiples of 16 (the caller pads with zeros).
// Compiles to (objdump, AVX2 build): vbroadcastss + vfmadd231ps ymm in both inner loops, no calls.

public enum AttentionTiles {
    /// S[i, j] = Σ_d q[i, d] · kt[d, j] for i < rows, j < keys.
    /// q: rows × depth (row stride ldq); kt: depth × keys (row stride ldk); s: rows × keys (stride lds).
    public static func scores(q: UnsafePointer<Float>, ldq: Int, rows: Int,
                              kt: UnsafePointer<Float>, ldk: Int, keys: Int, depth: Int,
                              s: UnsafeMutablePointer<Float>, lds: Int) {
        precondition(rows % 4 == 0 && keys % 16 == 0, "scores: rows must be a multiple of 4, keys of 16")
        var i = 0
        while i < rows {
            var j = 0
            while j < keys {
                scoreBlock(q + i * ldq, ldq, kt + j, ldk, depth, s + i * lds + j, lds)
                j += 16
            }
            i += 4
        }
    }

    /// O[i, :] += Σ_j p[i, j] · v[j, :] for i < rows, over `keys` keys and `width` columns.
    /// p: rows × keys (stride ldp); v: keys × width (stride ldv); o: rows × width (stride ldo).
    public static func accumulate(p: UnsafePointer<Float>, ldp: Int, rows: Int, keys: Int,
                                  v: UnsafePointer<Float>, ldv: Int, width: Int,
                                  o: UnsafeMutablePointer<Float>, ldo: Int) {
        precondition(rows % 4 == 0 && width % 16 == 0, "accumulate: rows must be a multiple of 4, width of 16")
        var i = 0
        while i < rows {
            var c = 0
            while c < width {
                valueBlock(p + i * ldp, ldp, keys, v + c, ldv, o + i * ldo + c, ldo)
                c += 16
            }
            i += 4
        }
    }

    @inline(__always)
    private static func load(_ p: UnsafePointer<Float>) -> SIMD8<Float> {
        UnsafeRawPointer(p).loadUnaligned(as: SIMD8<Float>.self)
    }

    @inline(__always)
    private static func store(_ v: SIMD8<Float>, _ p: UnsafeMutablePointer<Float>) {
        UnsafeMutableRawPointer(p).storeBytes(of: v, as: SIMD8<Float>.self)
    }

    /// 4 query rows × 16 keys.
    @inline(__always)
    private static func scoreBlock(_ q: UnsafePointer<Float>, _ ldq: Int, _ kt: UnsafePointer<Float>, _ ldk: Int,
                                   _ depth: Int, _ s: UnsafeMutablePointer<Float>, _ lds: Int) {
        var a00 = SIMD8<Float>(), a01 = SIMD8<Float>(), a10 = SIMD8<Float>(), a11 = SIMD8<Float>()
        var a20 = SIMD8<Float>(), a21 = SIMD8<Float>(), a30 = SIMD8<Float>(), a31 = SIMD8<Float>()
        let q0 = q, q1 = q + ldq, q2 = q + 2 * ldq, q3 = q + 3 * ldq
        var k = kt
        for d in 0..<depth {
            let k0 = load(k), k1 = load(k + 8)
            let b0 = SIMD8<Float>(repeating: q0[d])
            a00 = a00.addingProduct(b0, k0); a01 = a01.addingProduct(b0, k1)
            let b1 = SIMD8<Float>(repeating: q1[d])
            a10 = a10.addingProduct(b1, k0); a11 = a11.addingProduct(b1, k1)
            let b2 = SIMD8<Float>(repeating: q2[d])
            a20 = a20.addingProduct(b2, k0); a21 = a21.addingProduct(b2, k1)
            let b3 = SIMD8<Float>(repeating: q3[d])
            a30 = a30.addingProduct(b3, k0); a31 = a31.addingProduct(b3, k1)
            k += ldk
        }
        store(a00, s); store(a01, s + 8)
        store(a10, s + lds); store(a11, s + lds + 8)
        store(a20, s + 2 * lds); store(a21, s + 2 * lds + 8)
        store(a30, s + 3 * lds); store(a31, s + 3 * lds + 8)
    }

    /// 4 query rows × 16 output columns, over all keys.
    @inline(__always)
    private static func valueBlock(_ p: UnsafePointer<Float>, _ ldp: Int, _ keys: Int, _ v: UnsafePointer<Float>,
                                   _ ldv: Int, _ o: UnsafeMutablePointer<Float>, _ ldo: Int) {
        let o0 = o, o1 = o + ldo, o2 = o + 2 * ldo, o3 = o + 3 * ldo
        var a00 = load(o0), a01 = load(o0 + 8), a10 = load(o1), a11 = load(o1 + 8)
        var a20 = load(o2), a21 = load(o2 + 8), a30 = load(o3), a31 = load(o3 + 8)
        let p0 = p, p1 = p + ldp, p2 = p + 2 * ldp, p3 = p + 3 * ldp
        var vr = v
        for j in 0..<keys {
            let v0 = load(vr), v1 = load(vr + 8)
            let b0 = SIMD8<Float>(repeating: p0[j])
            a00 = a00.addingProduct(b0, v0); a01 = a01.addingProduct(b0, v1)
            let b1 = SIMD8<Float>(repeating: p1[j])
            a10 = a10.addingProduct(b1, v0); a11 = a11.addingProduct(b1, v1)
            let b2 = SIMD8<Float>(repeating: p2[j])
            a20 = a20.addingProduct(b2, v0); a21 = a21.addingProduct(b2, v1)
            let b3 = SIMD8<Float>(repeating: p3[j])
            a30 = a30.addingProduct(b3, v0); a31 = a31.addingProduct(b3, v1)
            vr += ldv
        }
        store(a00, o0); store(a01, o0 + 8); store(a10, o1); store(a11, o1 + 8)
        store(a20, o2); store(a21, o2 + 8); store(a30, o3); store(a31, o3 + 8)
    }

    // MARK: - Plain references (the tests compare the kernels against these)

    public static func scoresReference(q: UnsafePointer<Float>, ldq: Int, rows: Int,
                                       kt: UnsafePointer<Float>, ldk: Int, keys: Int, depth: Int,
                                       s: UnsafeMutablePointer<Float>, lds: Int) {
        for i in 0..<rows {
            for j in 0..<keys {
                var sum: Double = 0
                for d in 0..<depth { sum += Double(q[i * ldq + d]) * Double(kt[d * ldk + j]) }
                s[i * lds + j] = Float(sum)
            }
        }
    }

    public static func accumulateReference(p: UnsafePointer<Float>, ldp: Int, rows: Int, keys: Int,
                                           v: UnsafePointer<Float>, ldv: Int, width: Int,
                                           o: UnsafeMutablePointer<Float>, ldo: Int) {
        for i in 0..<rows {
            for c in 0..<width {
                var sum = Double(o[i * ldo + c])
                for j in 0..<keys { sum += Double(p[i * ldp + j]) * Double(v[j * ldv + c]) }
                o[i * ldo + c] = Float(sum)
            }
        }
    }
}

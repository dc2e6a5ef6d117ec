// The two matrix products of tiled (flash-style) attention, as register-blocked Float32 kernels:
//   scores   S[R, n] = Q[R, D] · Kᵀ     with the key tile stored transposed, Kᵀ[D, n]
//   values   O[R, D] += P[R, n] · V[n, D]
// R counts query rows (tokens × the query heads that share one key/value head), n keys of a tile.
// The caller does the online softmax between them (running max and sum per row); nothing here
// knows about heads, masks or caches.
//
// Why matrix products rather than one dot product per (query, key): each dot would end in a
// horizontal sum, and each key's value row would be read, multiplied and written back per query.
// Here a 4 × 16 block of scores keeps 8 ymm accumulators: per depth step two key loads and four
// broadcast query values feed eight vfmadd231ps; a 4 × 16 block of outputs likewise (two value
// loads, four broadcast probabilities, eight FMAs per key). Shapes: R a multiple of 4, n and D
// multiples of 16 (the caller pads with zeros).
// Both inner loops should compile to vbroadcastss + vfmadd231ps ymm with no calls
// (InstructionSelectionTests checks; measurements in docs/kernels.md).

public enum AttentionTiles {
    /// S[i, j] = Σ_d q[i, d] · kt[d, j] for i < rows, j < keys.
    /// q: rows × depth (row stride ldq); kt: depth × keys (row stride ldk); s: rows × keys (stride lds).
    public static func scores(
        q: UnsafePointer<Float>, ldq: Int, rows: Int,
        kt: UnsafePointer<Float>, ldk: Int, keys: Int, depth: Int,
        s: UnsafeMutablePointer<Float>, lds: Int
    ) {
        precondition(rows % 4 == 0 && keys % 16 == 0, "scores: rows must be a multiple of 4, keys of 16")
        var i = 0
        while i < rows {
            var j = 0
            while j < keys {
                block4x16(q + i * ldq, ldq, kt + j, ldk, depth, s + i * lds + j, lds, accumulate: false)
                j += 16
            }
            i += 4
        }
    }

    /// O[i, :] += Σ_j p[i, j] · v[j, :] for i < rows, over `keys` keys and `width` columns.
    /// p: rows × keys (stride ldp); v: keys × width (stride ldv); o: rows × width (stride ldo).
    public static func accumulate(
        p: UnsafePointer<Float>, ldp: Int, rows: Int, keys: Int,
        v: UnsafePointer<Float>, ldv: Int, width: Int,
        o: UnsafeMutablePointer<Float>, ldo: Int
    ) {
        precondition(rows % 4 == 0 && width % 16 == 0, "accumulate: rows must be a multiple of 4, width of 16")
        var i = 0
        while i < rows {
            var c = 0
            while c < width {
                block4x16(p + i * ldp, ldp, v + c, ldv, keys, o + i * ldo + c, ldo, accumulate: true)
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

    /// C[0..<4, 0..<16] (+)= Σ_k A[r, k] · B[k, 0..<16]: the one micro-kernel of both products
    /// (scores: A = queries, B = transposed keys, C starts at 0; values: A = probabilities,
    /// B = values, C accumulates onto the outputs). Per k: two B loads, four broadcast A values,
    /// eight vfmadd231ps into 8 ymm accumulators.
    @inline(__always)
    private static func block4x16(
        _ a: UnsafePointer<Float>, _ lda: Int, _ b: UnsafePointer<Float>, _ ldb: Int,
        _ depth: Int, _ c: UnsafeMutablePointer<Float>, _ ldc: Int, accumulate: Bool
    ) {
        let c0 = c, c1 = c + ldc, c2 = c + 2 * ldc, c3 = c + 3 * ldc
        var a00 = SIMD8<Float>(), a01 = SIMD8<Float>(), a10 = SIMD8<Float>(), a11 = SIMD8<Float>()
        var a20 = SIMD8<Float>(), a21 = SIMD8<Float>(), a30 = SIMD8<Float>(), a31 = SIMD8<Float>()
        if accumulate {
            a00 = load(c0); a01 = load(c0 + 8); a10 = load(c1); a11 = load(c1 + 8)
            a20 = load(c2); a21 = load(c2 + 8); a30 = load(c3); a31 = load(c3 + 8)
        }
        let r0 = a, r1 = a + lda, r2 = a + 2 * lda, r3 = a + 3 * lda
        var br = b
        for k in 0..<depth {
            let b0 = load(br), b1 = load(br + 8)
            let x0 = SIMD8<Float>(repeating: r0[k])
            a00 = a00.addingProduct(x0, b0); a01 = a01.addingProduct(x0, b1)
            let x1 = SIMD8<Float>(repeating: r1[k])
            a10 = a10.addingProduct(x1, b0); a11 = a11.addingProduct(x1, b1)
            let x2 = SIMD8<Float>(repeating: r2[k])
            a20 = a20.addingProduct(x2, b0); a21 = a21.addingProduct(x2, b1)
            let x3 = SIMD8<Float>(repeating: r3[k])
            a30 = a30.addingProduct(x3, b0); a31 = a31.addingProduct(x3, b1)
            br += ldb
        }
        store(a00, c0); store(a01, c0 + 8); store(a10, c1); store(a11, c1 + 8)
        store(a20, c2); store(a21, c2 + 8); store(a30, c3); store(a31, c3 + 8)
    }

    // MARK: - Plain references (the tests compare the kernels against these)

    public static func scoresReference(
        q: UnsafePointer<Float>, ldq: Int, rows: Int,
        kt: UnsafePointer<Float>, ldk: Int, keys: Int, depth: Int,
        s: UnsafeMutablePointer<Float>, lds: Int
    ) {
        for i in 0..<rows {
            for j in 0..<keys {
                var sum: Double = 0
                for d in 0..<depth { sum += Double(q[i * ldq + d]) * Double(kt[d * ldk + j]) }
                s[i * lds + j] = Float(sum)
            }
        }
    }

    public static func accumulateReference(
        p: UnsafePointer<Float>, ldp: Int, rows: Int, keys: Int,
        v: UnsafePointer<Float>, ldv: Int, width: Int,
        o: UnsafeMutablePointer<Float>, ldo: Int
    ) {
        for i in 0..<rows {
            for c in 0..<width {
                var sum = Double(o[i * ldo + c])
                for j in 0..<keys { sum += Double(p[i * ldp + j]) * Double(v[j * ldv + c]) }
                o[i * ldo + c] = Float(sum)
            }
        }
    }
}

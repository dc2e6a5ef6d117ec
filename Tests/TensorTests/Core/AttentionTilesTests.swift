import XCTest
import Tensor
import TestSupport

/// The attention tile kernels against their Double-accumulating references, on shapes with row
/// strides larger than the used width (as the model calls them) and odd depths.
final class AttentionTilesTests: XCTestCase {
    // Float32 FMA accumulation over <= 160 terms of magnitude <= 1 against a Double sum: each partial
    // sum rounds by <= 2^-24 relative, so the error is <= terms · 6e-8 · Σ|products|; 1e-5 absolute
    // plus 1e-5 relative covers 160 terms of products up to 1 with a wide margin, and a wrong
    // index or a missed term (error ~0.1-1) fails it.
    func testScoresMatchReference() {
        var rng = SeededGenerator(seed: 11)
        for (rows, keys, depth) in [(4, 16, 1), (4, 16, 64), (8, 32, 7), (12, 48, 33), (112, 64, 64), (16, 80, 128), (4, 16, 160)] {
            let ldq = depth + 3, ldk = keys + 5, lds = keys + 2
            let q = rng.floats(rows * ldq), kt = rng.floats(depth * ldk)
            var s = [Float](repeating: .nan, count: rows * lds), expected = s
            AttentionTiles.scores(q: q, ldq: ldq, rows: rows, kt: kt, ldk: ldk, keys: keys, depth: depth, s: &s, lds: lds)
            AttentionTiles.scoresReference(q: q, ldq: ldq, rows: rows, kt: kt, ldk: ldk, keys: keys, depth: depth, s: &expected, lds: lds)
            // Only the rows × keys block is written: the stride padding stays NaN in both.
            XCTAssertNil(
                mismatch(s.filter { !$0.isNaN }, expected.filter { !$0.isNaN }, absolute: 1e-5, relative: 1e-5),
                "rows \(rows) keys \(keys) depth \(depth)")
            XCTAssertEqual(s.filter { !$0.isNaN }.count, rows * keys)
        }
    }

    func testAccumulateMatchesReference() {
        var rng = SeededGenerator(seed: 12)
        for (rows, keys, width) in [(4, 1, 16), (4, 7, 16), (8, 64, 64), (12, 33, 32), (112, 64, 64), (4, 150, 128)] {
            let ldp = keys + 3, ldv = width + 16, ldo = width + 8
            let p = rng.floats(rows * ldp, in: 0...1), v = rng.floats(keys * ldv)
            var o = rng.floats(rows * ldo), expected = o
            AttentionTiles.accumulate(p: p, ldp: ldp, rows: rows, keys: keys, v: v, ldv: ldv, width: width, o: &o, ldo: ldo)
            AttentionTiles.accumulateReference(p: p, ldp: ldp, rows: rows, keys: keys, v: v, ldv: ldv, width: width, o: &expected, ldo: ldo)
            XCTAssertNil(mismatch(o, expected, absolute: 1e-5, relative: 1e-5), "rows \(rows) keys \(keys) width \(width)")
        }
    }

    /// A hand-computed case: q = [1, 2], keys (1, 0) and (0.5, -1) → scores 1 and -1.5; with
    /// p = [2, 3] and values rows [1 … 16] and [-1 …]: o = 2·v0 + 3·v1 added to o = 1.
    func testHandValues() {
        var q = [Float](repeating: 0, count: 4 * 2)
        q[0] = 1; q[1] = 2
        var kt = [Float](repeating: 0, count: 2 * 16)
        kt[0] = 1; kt[1] = 0.5  // depth 0: key0 = 1, key1 = 0.5
        kt[16] = 0; kt[17] = -1  // depth 1: key0 = 0, key1 = -1
        var s = [Float](repeating: 0, count: 4 * 16)
        AttentionTiles.scores(q: q, ldq: 2, rows: 4, kt: kt, ldk: 16, keys: 16, depth: 2, s: &s, lds: 16)
        XCTAssertEqual(s[0], 1)
        XCTAssertEqual(s[1], -1.5)
        XCTAssertEqual(s[16], 0)  // second query row is zero

        var p = [Float](repeating: 0, count: 4 * 2)
        p[0] = 2; p[1] = 3
        var v = [Float](repeating: -1, count: 2 * 16)
        for c in 0..<16 { v[c] = Float(c + 1) }
        var o = [Float](repeating: 1, count: 4 * 16)
        AttentionTiles.accumulate(p: p, ldp: 2, rows: 4, keys: 2, v: v, ldv: 16, width: 16, o: &o, ldo: 16)
        for c in 0..<16 { XCTAssertEqual(o[c], 1 + 2 * Float(c + 1) - 3) }
        XCTAssertEqual(o[16], 1)
    }
}

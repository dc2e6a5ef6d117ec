/// Compares two float sequences element by element with an absolute and a relative tolerance
/// (|a - b| <= absolute + relative * |b|). Returns nil when close, else a message naming the
/// first mismatches, for use as `XCTAssertNil(mismatch(...))` / `#expect(mismatch(...) == nil)`.
public func mismatch<A: Collection, B: Collection>(
    _ actual: A, _ expected: B, absolute: Float = 0, relative: Float = 0, limit: Int = 5
) -> String? where A.Element == Float, B.Element == Float {
    guard actual.count == expected.count else {
        return "count differs: \(actual.count) vs expected \(expected.count)"
    }
    var bad: [String] = []
    var worst: Float = 0
    var badCount = 0
    for (i, (a, b)) in zip(actual, expected).enumerated() {
        let d = abs(a - b)
        if !(d <= absolute + relative * abs(b)) {
            badCount += 1
            worst = max(worst, d.isNaN ? .infinity : d)
            if bad.count < limit { bad.append("[\(i)] \(a) vs \(b) (diff \(d))") }
        }
    }
    guard badCount > 0 else { return nil }
    return "\(badCount) of \(actual.count) elements differ (abs \(absolute), rel \(relative)); worst diff \(worst); first: "
        + bad.joined(separator: ", ")
}

/// Largest |a - b| over two sequences of equal length.
public func maxAbsoluteDifference<A: Collection, B: Collection>(_ a: A, _ b: B) -> Float
where A.Element == Float, B.Element == Float {
    zip(a, b).reduce(0) { max($0, abs($1.0 - $1.1)) }
}

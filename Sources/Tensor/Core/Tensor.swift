// Tensor: a row-major Float32 view over memory that is either owned (allocated here) or borrowed
// (for instance a region of a memory-mapped weight file, kept alive through `owner`).
//
// Shape letters used in comments: [R, C] = rows, columns of a 2-D tensor; the leading dimension is
// the one `rows(_:)` / `row(_:)` slice.

/// Holds the memory a tensor views: an allocation it frees, or a borrowed pointer plus the object
/// (e.g. the mmap owner) that keeps it valid. A final class, because it owns raw memory; shared by
/// every view cut from the same tensor. Unchecked Sendable: the memory is plain floats, and callers
/// coordinate concurrent writes (kernels write disjoint ranges).
public final class TensorStorage: @unchecked Sendable {
    /// First element of the whole storage.
    public let base: UnsafeMutablePointer<Float>
    /// Number of Float elements reachable from `base`.
    public let capacity: Int
    /// Keeps borrowed memory alive (nil for owned storage).
    public let owner: AnyObject?
    private let owned: Bool

    /// A zero-filled owned allocation of `capacity` floats, 64-byte aligned (one cache line, and
    /// enough for any vector load).
    public init(zeroedCapacity capacity: Int) {
        precondition(capacity >= 0, "negative capacity \(capacity)")
        let raw = UnsafeMutableRawPointer.allocate(byteCount: max(capacity, 1) * MemoryLayout<Float>.stride, alignment: 64)
        raw.initializeMemory(as: Float.self, repeating: 0, count: max(capacity, 1))
        base = raw.assumingMemoryBound(to: Float.self)
        self.capacity = capacity
        owner = nil
        owned = true
    }

    /// Borrowed memory: no copy; `owner` is retained for as long as this storage lives.
    public init(borrowing pointer: UnsafePointer<Float>, capacity: Int, owner: AnyObject?) {
        base = UnsafeMutablePointer(mutating: pointer)
        self.capacity = capacity
        self.owner = owner
        owned = false
    }

    /// True when this storage allocated its memory (and will free it).
    public var isOwned: Bool { owned }

    deinit {
        if owned { UnsafeMutableRawPointer(base).deallocate() }
    }
}

/// A row-major Float32 tensor, or a view into one. Copying a `Tensor` copies the view, not the
/// numbers: two copies share storage (like an array slice over a buffer, not like `Array`).
public struct Tensor: @unchecked Sendable {
    public let shape: [Int]
    /// Row-major strides in elements: strides[last] == 1, strides[d] = strides[d+1] * shape[d+1].
    public let strides: [Int]
    public let storage: TensorStorage
    /// Element offset of this view's first element inside `storage`.
    public let offset: Int

    /// Number of elements (product of the shape; 1 for a scalar with shape []).
    public var count: Int { shape.reduce(1, *) }
    public var rank: Int { shape.count }

    static func rowMajorStrides(_ shape: [Int]) -> [Int] {
        var strides = [Int](repeating: 1, count: shape.count)
        var s = 1
        for d in stride(from: shape.count - 1, through: 0, by: -1) {
            strides[d] = s
            s *= shape[d]
        }
        return strides
    }

    static func checkedCount(_ shape: [Int]) -> Int {
        precondition(shape.allSatisfy { $0 >= 0 }, "negative dimension in shape \(shape)")
        return shape.reduce(1, *)
    }

    init(storage: TensorStorage, offset: Int, shape: [Int]) {
        let n = Tensor.checkedCount(shape)
        precondition(
            offset >= 0 && offset + n <= storage.capacity,
            "view of \(n) elements at offset \(offset) exceeds storage of \(storage.capacity)")
        self.storage = storage
        self.offset = offset
        self.shape = shape
        self.strides = Tensor.rowMajorStrides(shape)
    }

    /// An owned tensor filled with zeros.
    public init(zeros shape: [Int]) {
        self.init(storage: TensorStorage(zeroedCapacity: Tensor.checkedCount(shape)), offset: 0, shape: shape)
    }

    /// An owned tensor holding a copy of `values` (row-major; count must equal the shape's product).
    public init(shape: [Int], values: [Float]) {
        let n = Tensor.checkedCount(shape)
        precondition(values.count == n, "shape \(shape) needs \(n) values, got \(values.count)")
        self.init(zeros: shape)
        let dst = storage.base
        values.withUnsafeBufferPointer { src in
            if let p = src.baseAddress { dst.update(from: p, count: n) }
        }
    }

    /// A tensor over borrowed memory, no copy. `owner` keeps the memory valid (e.g. the mmap).
    public init(borrowing pointer: UnsafePointer<Float>, shape: [Int], owner: AnyObject?) {
        let n = Tensor.checkedCount(shape)
        self.init(storage: TensorStorage(borrowing: pointer, capacity: n, owner: owner), offset: 0, shape: shape)
    }

    /// Start of this view. Mutable even for borrowed storage: writing into a read-only mapping is
    /// the caller's bug (it faults), as with any pointer.
    public var pointer: UnsafeMutablePointer<Float> { storage.base + offset }

    /// A view of rows `range` of the leading dimension, no copy. Shape [range.count, rest...].
    public func rows(_ range: Range<Int>) -> Tensor {
        precondition(!shape.isEmpty, "rows(_:) on a scalar tensor")
        precondition(
            range.lowerBound >= 0 && range.upperBound <= shape[0],
            "rows \(range) out of 0..<\(shape[0])")
        var s = shape
        s[0] = range.count
        return Tensor(storage: storage, offset: offset + range.lowerBound * strides[0], shape: s)
    }

    /// Row `i` of the leading dimension as a tensor of rank - 1, no copy (shape [C] for a [R, C]).
    public func row(_ i: Int) -> Tensor {
        precondition(!shape.isEmpty, "row(_:) on a scalar tensor")
        precondition(i >= 0 && i < shape[0], "row \(i) out of 0..<\(shape[0])")
        return Tensor(storage: storage, offset: offset + i * strides[0], shape: Array(shape.dropFirst()))
    }

    /// The same elements under another shape with the same count, no copy.
    public func reshaped(_ newShape: [Int]) -> Tensor {
        precondition(Tensor.checkedCount(newShape) == count, "cannot reshape \(shape) to \(newShape)")
        return Tensor(storage: storage, offset: offset, shape: newShape)
    }

    /// An owned copy of this view.
    public func copy() -> Tensor {
        let t = Tensor(zeros: shape)
        t.pointer.update(from: pointer, count: count)
        return t
    }

    /// The elements, copied out in row-major order (for tests and small results).
    public var array: [Float] {
        Array(UnsafeBufferPointer(start: pointer, count: count))
    }

    /// Element at a full multi-index (slow path; for tests and setup, not kernels).
    public subscript(_ index: Int...) -> Float {
        get { pointer[flatIndex(index)] }
        nonmutating set { pointer[flatIndex(index)] = newValue }
    }

    private func flatIndex(_ index: [Int]) -> Int {
        precondition(index.count == shape.count, "index \(index) for shape \(shape)")
        var flat = 0
        for d in 0..<index.count {
            precondition(index[d] >= 0 && index[d] < shape[d], "index \(index) out of shape \(shape)")
            flat += index[d] * strides[d]
        }
        return flat
    }
}

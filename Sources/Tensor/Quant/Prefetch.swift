// Software prefetch for the kernels that stream weights from memory.
//
// Why: one token of decode streams every weight once, and the AVX2 kernels compute a row about as
// fast as DRAM delivers it, yet from DRAM the two did not overlap: the hardware prefetcher restarts
// on every row chunk and runs too little ahead. Asking for the line `distance` bytes ahead of the
// one being multiplied keeps the misses in flight while the vector units work (measurements in
// docs/kernels.md).
//
// Swift has no prefetch builtin and Clang's `_mm_prefetch` is a macro (not imported); the LLVM
// intrinsic itself, named through `@_silgen_name`, compiles to one `prefetcht0`
// (QuantKernelsTests.testKernelInstructions checks the kernels keep it).

@_silgen_name("llvm.prefetch.p0")
private func llvmPrefetch(_ address: UnsafeRawPointer, _ write: Int32, _ locality: Int32, _ cacheType: Int32)

/// `prefetcht0 [address]`: bring the line into all cache levels for reading. Never faults, so it
/// may point past the end of a buffer.
@inline(__always)
func prefetchForRead(_ address: UnsafeRawPointer) {
    llvmPrefetch(address, 0, 3, 1)
}

extension QuantKernels {
    /// How far ahead (bytes) of the weights being multiplied the small-M tiles and the GEMM (its
    /// unpacking, its first pass over int8 rows) prefetch; 0 turns prefetching off. Set it before
    /// any matmul runs, not during.
    nonisolated(unsafe) public static var prefetchDistance = 1024

    /// The same for decode (M = 1), where the kernels do least work per byte and the stream's lead
    /// matters most: 4 KB measured faster than 1 KB on the Zen 4 box (AVX-512 VNNI builds), 1 KB
    /// elsewhere (docs/kernels.md). A setting so that `bench kernels --prefetch-sweep` can compare
    /// distances in one run on a noisy shared machine.
    #if AVX512VNNI
    nonisolated(unsafe) public static var decodePrefetchDistance = 4096
    #else
    nonisolated(unsafe) public static var decodePrefetchDistance = 1024
    #endif
}

import XCTest
import Tensor
import TestSupport

/// Checks that the core ops still compile to the vector instructions their comments name
/// (objdump of this test executable). Speed is never asserted; losing these instructions is what
/// turns a 1 ns/element op into a 10-50 ns/element one (measured: softmax 12x, gelu 30-60x, f16
/// conversion 100x). The instructions are those of AVX2 + FMA + F16C builds (where Package.swift
/// defines AVX2; AVX-512 builds keep these ymm forms too); other builds skip, saying so.
final class InstructionSelectionTests: XCTestCase {
    /// Mangled-name fragments: `3OpsO4silu_` is Ops.silu(_:count:) and not Ops.siluReference.
    private func function(_ fragment: String) throws -> Disassembly.Function {
        #if AVX2
        return try Disassembly.function(containing: ["6Tensor", fragment])
        #else
        throw XCTSkip(
            "built without AVX2 (Package.swift defines it only where /proc/cpuinfo lists avx2, fma and f16c): the instructions checked here are AVX2's"
        )
        #endif
    }

    func testHalfConversionUsesF16C() throws {
        let f = try function("21convertFloat16ToFloat_")
        XCTAssertGreaterThan(f.count("vcvtph2ps", register: "ymm"), 0, "convertFloat16ToFloat lost vcvtph2ps ymm:\n\(f.body)")
    }

    func testReductionsUseVectorFMA() throws {
        for name in ["3OpsO3dot_", "3OpsO7rmsNorm_"] {
            let f = try function(name)
            XCTAssertGreaterThan(f.count("vfmadd231ps", register: "ymm"), 0, "\(name) lost vfmadd231ps ymm")
        }
        let axpy = try function("3OpsO4axpy_")
        XCTAssertGreaterThan(
            axpy.count("vfmadd213ps", register: "ymm") + axpy.count("vfmadd231ps", register: "ymm"), 0, "axpy lost its vector FMA")
    }

    /// The polynomial exp must be inlined into each activation (an out-of-line call per 8 elements
    /// was measured slower) and run on ymm registers.
    func testActivationsInlineTheVectorExp() throws {
        for name in ["3OpsO4silu_", "3OpsO4gelu_", "3OpsO7softmax_", "3OpsO6swiglu", "3OpsO10expShifted_"] {
            let f = try function(name)
            XCTAssertEqual(f.count("vectorExp8"), 0, "\(name) calls vectorExp8 out of line")
            XCTAssertGreaterThan(
                f.count("vfmadd213ps", register: "ymm") + f.count("vfmadd231ps", register: "ymm"), 3, "\(name) lost the vector polynomial")
        }
    }

    /// Attention's tile products: broadcast-times-vector FMAs on ymm, 8 accumulators per block,
    /// nothing out of line (a call or a horizontal sum per score is what they replaced).
    func testAttentionTilesUseBroadcastFMA() throws {
        for name in ["14AttentionTilesO6scores", "14AttentionTilesO10accumulate"] {
            let f = try function(name)
            XCTAssertGreaterThanOrEqual(f.count("vfmadd231ps", register: "ymm"), 8, "\(name) lost its vector FMAs:\n\(f.body)")
            XCTAssertGreaterThan(f.count("vbroadcastss"), 0, "\(name) lost vbroadcastss")
            XCTAssertEqual(f.count("call"), 0, "\(name) calls out of line:\n\(f.body)")
        }
    }
}

// swift-tools-version: 6.0
import PackageDescription
import Foundation

// Sarvam is an appliance built on the box it runs on, so kernels target the build machine's CPU
// (`-march=native`). The manifest also reads the CPU's feature flags and defines a compile-time
// condition per instruction set that a kernel relies on: the intrinsic paths are compiled only
// where the target has the feature (swiftc crashes on AVX-512 intrinsics otherwise), and the
// portable Swift path, which is also the reference, is always there.
let cpuFlags: Set<Substring> = {
    guard let info = try? String(contentsOfFile: "/proc/cpuinfo", encoding: .utf8),
        let line = info.split(separator: "\n").first(where: { $0.hasPrefix("flags") })
    else { return [] }
    return Set(line.split(separator: " "))
}()

// SARVAM_AVX2_ONLY=1 builds for the other machine kind on an AVX-512 one (AVX2, FMA and F16C,
// `-march=x86-64-v3`), so that its kernels can be tested there: use it with its own
// `--scratch-path` (docs/kernels.md).
let avx2Only = ProcessInfo.processInfo.environment["SARVAM_AVX2_ONLY"] == "1"

var kernelDefines: [SwiftSetting] = []
if cpuFlags.contains("avx2") && cpuFlags.contains("fma") && cpuFlags.contains("f16c") {
    kernelDefines.append(.define("AVX2"))
}
if cpuFlags.contains("avx512_vnni") && cpuFlags.contains("avx512bw") && !avx2Only {
    kernelDefines.append(.define("AVX512VNNI"))
}

// `-enable-testing` on our own modules only: the test command builds once, in release (the kernels
// need the optimizer), and `@testable import` needs it; the dependencies stay as they are.
let march = avx2Only ? ["-march=x86-64-v3", "-mtune=native"] : ["-march=native"]
let nativeFlags: [SwiftSetting] = [.unsafeFlags(march.flatMap { ["-Xcc", $0] } + ["-enable-testing"])] + kernelDefines

let package = Package(
    name: "Sarvam",
    platforms: [.macOS(.v14)],
    products: [
        .executable(name: "sarvam", targets: ["sarvam"]),
        .executable(name: "bench", targets: ["bench"]),
    ],
    dependencies: [
        .package(url: "https://github.com/apple/swift-argument-parser", from: "1.8.2"),
        .package(url: "https://github.com/hummingbird-project/hummingbird", from: "2.28.1"),
        .package(url: "https://github.com/groue/GRDB.swift", from: "7.10.0"),
        .package(url: "https://github.com/apple/swift-log", from: "1.16.2"),
        .package(url: "https://github.com/apple/swift-metrics", from: "2.13.0"),
        .package(url: "https://github.com/swift-server/swift-prometheus", from: "2.4.1"),
        .package(url: "https://github.com/swift-server/swift-service-lifecycle", from: "2.13.0"),
        .package(url: "https://github.com/apple/swift-http-types", from: "1.8.0"),
        .package(url: "https://github.com/apple/swift-nio", from: "2.101.2"),
        .package(url: "https://github.com/apple/swift-nio-ssl", from: "2.37.6"),
        .package(url: "https://github.com/apple/swift-nio-extras", from: "1.35.2"),
        .package(url: "https://github.com/vapor/postgres-nio", from: "1.33.2"),
        .package(url: "https://github.com/swift-server/async-http-client", from: "1.37.0"),
        .package(url: "https://github.com/hummingbird-project/hummingbird-auth", from: "2.5.0"),
    ],
    targets: [
        // System library: a module map only (OpenBLAS's CBLAS).
        .systemLibrary(name: "CBLAS", path: "Sources/CBLAS"),

        // Numeric core: tensors, formats, kernels, thread pool. Knows nothing about models.
        .target(name: "Tensor", dependencies: ["CBLAS"], swiftSettings: nativeFlags),
        // Model configuration, Sarvam weight file, forward pass, KV cache, sampling, generation.
        .target(name: "Transformer", dependencies: ["Tensor"], swiftSettings: nativeFlags),
        // Text <-> token ids and chat templates. Depends on nothing of ours.
        .target(name: "Tokenizer", swiftSettings: nativeFlags),
        // GGUF / Hugging Face readers and the import into Sarvam's weight file.
        .target(name: "ModelImport", dependencies: ["Transformer", "Tensor", "Tokenizer"], swiftSettings: nativeFlags),
        // HTTP API, web page, scheduler, store, auth, metrics.
        .target(
            name: "ChatServer",
            dependencies: [
                "Transformer", "Tokenizer",
                .product(name: "Hummingbird", package: "hummingbird"),
                .product(name: "HummingbirdCore", package: "hummingbird"),
                .product(name: "HummingbirdTLS", package: "hummingbird"),
                .product(name: "HummingbirdHTTP2", package: "hummingbird"),
                .product(name: "HummingbirdBcrypt", package: "hummingbird-auth"),
                .product(name: "NIOCore", package: "swift-nio"),
                .product(name: "NIOPosix", package: "swift-nio"),
                .product(name: "NIOTLS", package: "swift-nio"),
                .product(name: "NIOSSL", package: "swift-nio-ssl"),
                .product(name: "NIOHTTPTypes", package: "swift-nio-extras"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
                .product(name: "Metrics", package: "swift-metrics"),
                .product(name: "CoreMetrics", package: "swift-metrics"),
                .product(name: "Prometheus", package: "swift-prometheus"),
                .product(name: "ServiceLifecycle", package: "swift-service-lifecycle"),
                .product(name: "UnixSignals", package: "swift-service-lifecycle"),
                .product(name: "HTTPTypes", package: "swift-http-types"),
                .product(name: "AsyncHTTPClient", package: "async-http-client"),
            ],
            // The web page and the API contract, compiled into the binary (see HTTP/WebPage.swift).
            resources: [
                .embedInCode("Web/index.html"), .embedInCode("Web/app.js"), .embedInCode("Web/app.css"),
                .embedInCode("Web/openapi.yaml"),
            ],
            swiftSettings: nativeFlags),

        .executableTarget(
            name: "sarvam",
            dependencies: [
                "Transformer", "Tokenizer", "ModelImport", "ChatServer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: nativeFlags),
        .executableTarget(
            name: "bench",
            dependencies: [
                "Tensor", "Transformer", "Tokenizer",
                .product(name: "ArgumentParser", package: "swift-argument-parser"),
            ],
            swiftSettings: nativeFlags),

        .target(name: "TestSupport", dependencies: ["Tensor"], path: "Tests/TestSupport", swiftSettings: nativeFlags),
        .testTarget(name: "TensorTests", dependencies: ["Tensor", "TestSupport"], swiftSettings: nativeFlags),
        .testTarget(
            name: "TransformerTests", dependencies: ["Transformer", "Tensor", "Tokenizer", "TestSupport"], swiftSettings: nativeFlags),
        .testTarget(name: "TokenizerTests", dependencies: ["Tokenizer", "ModelImport", "TestSupport"], swiftSettings: nativeFlags),
        .testTarget(
            name: "ModelImportTests", dependencies: ["ModelImport", "Transformer", "Tensor", "Tokenizer", "TestSupport"],
            swiftSettings: nativeFlags),
        .testTarget(
            name: "ChatServerTests",
            dependencies: [
                "ChatServer", "Transformer", "Tensor", "Tokenizer", "TestSupport",
                .product(name: "HummingbirdTesting", package: "hummingbird"),
                .product(name: "GRDB", package: "GRDB.swift"),
                .product(name: "PostgresNIO", package: "postgres-nio"),
                .product(name: "Logging", package: "swift-log"),
            ],
            swiftSettings: nativeFlags),
        .testTarget(name: "BenchTests", dependencies: ["bench"], swiftSettings: nativeFlags),
    ]
)

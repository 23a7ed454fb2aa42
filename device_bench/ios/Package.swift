// swift-tools-version:5.9
// FeatherBench: times a FeatherFace .mlpackage on Apple hardware and checks it against the
// bundle's golden vectors (exported by `python -m featherface.bench.export_golden`).
// Written and reviewed on Linux: NOT built or run there (no Swift toolchain, no Core ML).
import PackageDescription

let package = Package(
    name: "FeatherBench",
    platforms: [.macOS(.v13), .iOS(.v16)],
    products: [
        .executable(name: "FeatherBench", targets: ["FeatherBench"]),
        // The same code for an iPhone: add this package to an app and call FeatherBench.run.
        .library(name: "FeatherBenchCore", targets: ["FeatherBenchCore"]),
    ],
    targets: [
        .target(name: "FeatherBenchCore", path: "Sources/FeatherBenchCore"),
        .executableTarget(name: "FeatherBench", dependencies: ["FeatherBenchCore"], path: "Sources/FeatherBench"),
    ]
)

// FeatherBench command line (macOS): time a FeatherFace .mlpackage and check it against the
// golden vectors exported by `python -m featherface.bench.export_golden BUNDLE GOLDEN_DIR`.
//
//   swift run -c release FeatherBench BUNDLE/model_fp16.mlpackage GOLDEN_DIR \
//       [--runs 100] [--warmup 10] [--compute-units CPU_ONLY,CPU_AND_GPU,CPU_AND_NE,ALL]
//
// Prints the report as JSON on stdout. Exit status: 0 parity passes, 1 parity fails,
// 2 bad arguments or files (one line on stderr).
// Written on Linux without a Swift toolchain: NOT compiled there. See ../../README.md.

import FeatherBenchCore
import Foundation

let usage = "usage: FeatherBench MODEL.mlpackage GOLDEN_DIR [--runs N] [--warmup N] [--compute-units CPU_ONLY,CPU_AND_GPU,CPU_AND_NE,ALL]"

func fail(_ message: String) -> Never {
    FileHandle.standardError.write(Data("FeatherBench: error: \(message)\n".utf8))
    exit(2)
}

var positional: [String] = []
var options = BenchOptions()
var arguments = Array(CommandLine.arguments.dropFirst())
while !arguments.isEmpty {
    let argument = arguments.removeFirst()
    switch argument {
    case "-h", "--help":
        print(usage)
        exit(0)
    case "--runs", "--warmup", "--compute-units":
        guard !arguments.isEmpty else { fail("\(argument) needs a value\n\(usage)") }
        let value = arguments.removeFirst()
        if argument == "--compute-units" {
            options.computeUnits = value.split(separator: ",").map { String($0) }
            if let unknown = options.computeUnits.first(where: { !allComputeUnits.contains($0) }) {
                fail("unknown compute units \(unknown); expected \(allComputeUnits.joined(separator: ","))")
            }
        } else {
            guard let number = Int(value), number >= (argument == "--runs" ? 1 : 0) else { fail("\(argument) \(value): expected a count") }
            if argument == "--runs" { options.runs = number } else { options.warmup = number }
        }
    default:
        if argument.hasPrefix("-") { fail("unknown option \(argument)\n\(usage)") }
        positional.append(argument)
    }
}
guard positional.count == 2 else { fail(usage) }
let modelURL = URL(fileURLWithPath: positional[0])
let goldenURL = URL(fileURLWithPath: positional[1])
guard FileManager.default.fileExists(atPath: modelURL.path) else { fail("\(modelURL.path): no such model") }
guard FileManager.default.fileExists(atPath: goldenURL.appendingPathComponent("golden.json").path) else {
    fail("\(goldenURL.path) has no golden.json (run: python -m featherface.bench.export_golden BUNDLE \(goldenURL.path))")
}

do {
    let report = try FeatherBenchCore.run(model: modelURL, golden: goldenURL, options: options)
    print(try jsonString(report))
    exit((report["parity"] as? String) == "pass" ? 0 : 1)
} catch {
    fail("\(error)")
}

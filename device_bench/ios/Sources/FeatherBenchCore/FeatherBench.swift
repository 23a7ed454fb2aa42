// FeatherBenchCore: latency, memory and tensor parity of a FeatherFace .mlpackage on Apple
// hardware, with the JSON keys of `python -m featherface.bench` (model_ms, total_ms with
// min/p50/p90/p99/mean/max, throughput, peak_rss_mb, load_ms, parity).
//
// Written on Linux without a Swift toolchain: it has NOT been compiled. See ../../README.md.

import CoreML
import CoreVideo
import Darwin
import Foundation

public struct BenchError: Error, CustomStringConvertible {
    public let description: String
    public init(_ description: String) { self.description = description }
}

// MARK: - The golden index written by `python -m featherface.bench.export_golden BUNDLE OUT`

public struct ArrayRef: Decodable {
    public let file: String
    public let shape: [Int]
}

public struct InputRef: Decodable {
    public let file: String
    public let shape: [Int]  // [G, 3, S, S], NCHW, BGR minus mean
    public let mean: [Float]  // BGR
}

public struct FileInput: Decodable {
    public let type: String?  // "image" for the image-input variant
}

public struct FileInfo: Decodable {
    public let file: String
    public let precision: String?
    public let output_map: [String: String]  // loc / conf / landmarks -> the model's output name
    public let input: FileInput?
    public let error_bounds: [String: Double?]?  // null: detection agreement is the measure
}

public struct GoldenIndex: Decodable {
    public let format: String
    public let images: [String]
    public let input: InputRef
    public let reference: [String: ArrayRef]
    public let files: [FileInfo]
}

public let outputNames = ["loc", "conf", "landmarks"]
public let allComputeUnits = ["CPU_ONLY", "CPU_AND_GPU", "CPU_AND_NE", "ALL"]

public struct BenchOptions {
    public var runs = 100
    public var warmup = 10
    public var computeUnits = allComputeUnits
    public init() {}
}

// MARK: - Statistics (same definitions as device_bench/stats.py)

/// Linear interpolation between closest ranks (NumPy's default): 1...10 -> p50 5.5, p90 9.1, p99 9.91.
public func percentile(_ samples: [Double], _ q: Double) -> Double {
    let sorted = samples.sorted()
    let rank = q / 100.0 * Double(sorted.count - 1)
    let low = Int(rank.rounded(.down))
    let high = min(low + 1, sorted.count - 1)
    return sorted[low] + (sorted[high] - sorted[low]) * (rank - Double(low))
}

public func summarize(_ samples: [Double]) -> [String: Any] {
    let mean = samples.reduce(0, +) / Double(samples.count)
    return [
        "min": samples.min()!, "p50": percentile(samples, 50), "p90": percentile(samples, 90),
        "p99": percentile(samples, 99), "mean": mean, "max": samples.max()!, "n": samples.count,
    ]
}

/// A JSON value: the wrapped value, or null.
func orNull<T>(_ value: T?) -> Any { value.map { $0 as Any } ?? NSNull() }

func milliseconds(since start: UInt64) -> Double {
    Double(DispatchTime.now().uptimeNanoseconds - start) / 1e6
}

func now() -> UInt64 { DispatchTime.now().uptimeNanoseconds }

// MARK: - Reading and writing tensors

func readFloats(_ url: URL, count: Int) throws -> [Float] {
    let data = try Data(contentsOf: url)
    guard data.count == count * MemoryLayout<Float>.size else {
        throw BenchError("\(url.lastPathComponent): \(data.count) bytes, expected \(count) float32 values")
    }
    var values = [Float](repeating: 0, count: count)
    _ = values.withUnsafeMutableBytes { data.copyBytes(to: $0) }  // Apple devices are little-endian
    return values
}

func computeUnits(_ name: String) throws -> MLComputeUnits {
    switch name {
    case "CPU_ONLY": return .cpuOnly
    case "CPU_AND_GPU": return .cpuAndGPU
    case "CPU_AND_NE": return .cpuAndNeuralEngine
    case "ALL": return .all
    default: throw BenchError("unknown compute units \(name); expected one of \(allComputeUnits.joined(separator: ", "))")
    }
}

/// Golden image `index` as the model's input: a float32 multi-array (NCHW, BGR minus mean)
/// or, for the image-input variant, a 32BGRA pixel buffer (mean added back; Core ML
/// subtracts it again with the model's bias).
func makeInput(_ model: MLModel, _ inputs: [Float], index: Int, size: Int, mean: [Float]) throws -> MLFeatureProvider {
    guard let input = model.modelDescription.inputDescriptionsByName.first else {
        throw BenchError("the model has no input")
    }
    let name = input.key
    let plane = size * size
    let offset = index * 3 * plane
    switch input.value.type {
    case .multiArray:
        let array = try MLMultiArray(shape: [1, 3, NSNumber(value: size), NSNumber(value: size)], dataType: .float32)
        inputs.withUnsafeBufferPointer { source in
            _ = memcpy(array.dataPointer, source.baseAddress! + offset, 3 * plane * MemoryLayout<Float>.size)
        }
        return try MLDictionaryFeatureProvider(dictionary: [name: MLFeatureValue(multiArray: array)])
    case .image:
        var created: CVPixelBuffer?
        let status = CVPixelBufferCreate(kCFAllocatorDefault, size, size, kCVPixelFormatType_32BGRA, nil, &created)
        guard status == kCVReturnSuccess, let buffer = created else { throw BenchError("cannot create a pixel buffer (\(status))") }
        CVPixelBufferLockBaseAddress(buffer, [])
        defer { CVPixelBufferUnlockBaseAddress(buffer, []) }
        let rowBytes = CVPixelBufferGetBytesPerRow(buffer)
        let base = CVPixelBufferGetBaseAddress(buffer)!.assumingMemoryBound(to: UInt8.self)
        func byte(_ value: Float) -> UInt8 { UInt8(max(0, min(255, value.rounded()))) }
        for y in 0..<size {
            let row = base + y * rowBytes
            for x in 0..<size {
                let pixel = offset + y * size + x
                row[4 * x + 0] = byte(inputs[pixel] + mean[0])  // B
                row[4 * x + 1] = byte(inputs[pixel + plane] + mean[1])  // G
                row[4 * x + 2] = byte(inputs[pixel + 2 * plane] + mean[2])  // R
                row[4 * x + 3] = 255
            }
        }
        return try MLDictionaryFeatureProvider(dictionary: [name: MLFeatureValue(pixelBuffer: buffer)])
    default:
        throw BenchError("unsupported input type of \(name)")
    }
}

func halfToFloat(_ bits: UInt16) -> Float {
    let sign: Float = bits & 0x8000 != 0 ? -1 : 1
    let exponent = Int((bits >> 10) & 0x1f)
    let mantissa = UInt32(bits & 0x3ff)
    if exponent == 0 { return sign * Float(mantissa) / 16_777_216 }  // zero and subnormals: m x 2^-24
    if exponent == 31 { return mantissa == 0 ? sign * .infinity : .nan }
    let signBit: UInt32 = bits & 0x8000 != 0 ? 0x8000_0000 : 0
    return Float(bitPattern: signBit | (UInt32(exponent + 112) << 23) | (mantissa << 13))
}

/// All values of a multi-array in logical (C) order, whatever its strides and type.
func floats(_ array: MLMultiArray) -> [Float] {
    let shape = array.shape.map { $0.intValue }
    let strides = array.strides.map { $0.intValue }
    let count = array.count
    var contiguous = true
    var expected = 1
    for d in stride(from: shape.count - 1, through: 0, by: -1) {
        if shape[d] > 1 && strides[d] != expected { contiguous = false }
        expected *= shape[d]
    }
    var values = [Float](repeating: 0, count: count)
    if contiguous && array.dataType == .float32 {
        values.withUnsafeMutableBytes { _ = memcpy($0.baseAddress!, array.dataPointer, count * MemoryLayout<Float>.size) }
        return values
    }
    let pointer = array.dataPointer
    var index = [Int](repeating: 0, count: shape.count)
    for i in 0..<count {
        var offset = 0
        for d in 0..<shape.count { offset += index[d] * strides[d] }
        switch array.dataType {
        case .float32: values[i] = pointer.load(fromByteOffset: 4 * offset, as: Float.self)
        case .double: values[i] = Float(pointer.load(fromByteOffset: 8 * offset, as: Double.self))
        case .int32: values[i] = Float(pointer.load(fromByteOffset: 4 * offset, as: Int32.self))
        default: values[i] = halfToFloat(pointer.load(fromByteOffset: 2 * offset, as: UInt16.self))  // float16
        }
        var d = shape.count - 1
        while d >= 0 {
            index[d] += 1
            if index[d] < shape[d] { break }
            index[d] = 0
            d -= 1
        }
    }
    return values
}

func outputs(of prediction: MLFeatureProvider, _ map: [String: String]) throws -> [String: [Float]] {
    var result: [String: [Float]] = [:]
    for name in outputNames {
        guard let tensor = map[name], let array = prediction.featureValue(for: tensor)?.multiArrayValue else {
            throw BenchError("the model has no output \(map[name] ?? "?") for \(name)")
        }
        result[name] = floats(array)
    }
    return result
}

// MARK: - Device and memory

func sysctlString(_ name: String) -> String? {
    var size = 0
    guard sysctlbyname(name, nil, &size, nil, 0) == 0, size > 0 else { return nil }
    var bytes = [CChar](repeating: 0, count: size)
    guard sysctlbyname(name, &bytes, &size, nil, 0) == 0 else { return nil }
    return String(cString: bytes)
}

public func peakRSSMegabytes() -> Double {
    var usage = rusage()
    getrusage(RUSAGE_SELF, &usage)
    return Double(usage.ru_maxrss) / 1_048_576  // bytes on Darwin
}

public func describeDevice() -> [String: Any] {
    let info = ProcessInfo.processInfo
    let thermal: String
    switch info.thermalState {
    case .nominal: thermal = "nominal"
    case .fair: thermal = "fair"
    case .serious: thermal = "serious"
    case .critical: thermal = "critical"
    @unknown default: thermal = "unknown"
    }
    return [
        "cpu": sysctlString("machdep.cpu.brand_string") ?? sysctlString("hw.machine") ?? "unknown",
        "machine": sysctlString("hw.machine") ?? "unknown",
        "model": sysctlString("hw.model") ?? "unknown",
        "cores": info.processorCount,
        "usable_cores": info.activeProcessorCount,
        "memory_mb": Double(info.physicalMemory) / 1_048_576,
        "os": info.operatingSystemVersionString,
        "thermal_state": thermal,
        "low_power_mode": info.isLowPowerModeEnabled,
        "runtimes": ["coreml": "Core ML (\(info.operatingSystemVersionString))"],
    ]
}

// MARK: - Parity (tensor level)

func tensorParity(_ reference: [String: [Float]], _ candidate: [String: [Float]], bounds: [String: Double?]?) -> [String: Any] {
    var reasons: [String] = []
    var tensor: [String: Any] = [:]
    var boundsOut: [String: Any] = [:]
    for name in outputNames {
        let ref = reference[name]!, cand = candidate[name]!
        guard ref.count == cand.count else {
            reasons.append("\(name): \(cand.count) values, PyTorch has \(ref.count)")
            continue
        }
        var maxError = 0.0, sumError = 0.0, dot = 0.0, refNorm = 0.0, candNorm = 0.0
        var finite = true
        for i in 0..<ref.count {
            let r = Double(ref[i]), c = Double(cand[i])
            if !c.isFinite { finite = false; continue }
            let e = abs(r - c)
            maxError = max(maxError, e)
            sumError += e
            dot += r * c
            refNorm += r * r
            candNorm += c * c
        }
        let denominator = (refNorm * candNorm).squareRoot()
        tensor[name] = [
            "max_abs_error": finite ? maxError : Double.infinity,
            "mean_abs_error": finite ? sumError / Double(ref.count) : Double.infinity,
            "cosine": finite && denominator > 0 ? dot / denominator : 0.0,
            "finite": finite,
        ] as [String: Any]
        let bound = bounds?[name] ?? nil
        boundsOut[name] = orNull(bound)
        if !finite {
            reasons.append("\(name) has non-finite values (overflow?)")
        } else if let bound, maxError > bound {
            reasons.append(String(format: "%@ max abs error %.2e > %.2e", name, maxError, bound))
        }
    }
    return [
        "status": reasons.isEmpty ? "pass" : "fail",
        "reasons": reasons,
        "tensor": tensor,
        "error_bounds": boundsOut,
        "detections": "not checked by the Swift harness (tensor bounds only; fp16/w8 files are judged on detections by the Python bench)",
    ]
}

// MARK: - The benchmark

struct Loaded {
    let units: String
    let model: MLModel
    let loadMs: Double
    let firstRunMs: Double
    let prepared: MLFeatureProvider
}

/// Times `modelURL` (.mlpackage or .mlmodelc) at each compute unit, interleaved (each
/// round: one prediction per compute unit in turn, then one full call per unit), and
/// checks each unit's outputs on all golden images against PyTorch's.
public func run(model modelURL: URL, golden goldenDir: URL, options: BenchOptions = BenchOptions()) throws -> [String: Any] {
    let index = try JSONDecoder().decode(GoldenIndex.self, from: Data(contentsOf: goldenDir.appendingPathComponent("golden.json")))
    let fileName = modelURL.lastPathComponent
    guard let info = index.files.first(where: { $0.file == fileName }) else {
        throw BenchError("\(fileName) is not a file of the exported bundle (golden.json lists \(index.files.map { $0.file }.joined(separator: ", ")))")
    }
    let shape = index.input.shape
    guard shape.count == 4, shape[1] == 3, shape[2] == shape[3] else { throw BenchError("golden input shape \(shape) is not [G, 3, S, S]") }
    let (count, size) = (shape[0], shape[2])
    let inputs = try readFloats(goldenDir.appendingPathComponent(index.input.file), count: shape.reduce(1, *))
    var reference: [String: [Float]] = [:]
    for name in outputNames {
        guard let ref = index.reference[name] else { throw BenchError("golden.json has no reference \(name)") }
        reference[name] = try readFloats(goldenDir.appendingPathComponent(ref.file), count: ref.shape.reduce(1, *))
    }

    var compileMs = 0.0
    var compiledURL = modelURL
    if modelURL.pathExtension != "mlmodelc" {
        let start = now()
        compiledURL = try MLModel.compileModel(at: modelURL)
        compileMs = milliseconds(since: start)
    }

    var loaded: [Loaded] = []
    for units in options.computeUnits {
        let configuration = MLModelConfiguration()
        configuration.computeUnits = try computeUnits(units)
        let start = now()
        let model = try MLModel(contentsOf: compiledURL, configuration: configuration)
        let loadMs = milliseconds(since: start)
        let prepared = try makeInput(model, inputs, index: 0, size: size, mean: index.input.mean)
        let first = now()
        _ = try model.prediction(from: prepared)
        loaded.append(Loaded(units: units, model: model, loadMs: loadMs, firstRunMs: milliseconds(since: first), prepared: prepared))
    }

    var modelMs = [[Double]](repeating: [], count: loaded.count)
    var totalMs = [[Double]](repeating: [], count: loaded.count)
    for round in 0..<(options.warmup + options.runs) {
        let timed = round >= options.warmup
        for (i, item) in loaded.enumerated() {  // the model alone, on a prepared input
            let start = now()
            _ = try item.model.prediction(from: item.prepared)
            if timed { modelMs[i].append(milliseconds(since: start)) }
        }
        for (i, item) in loaded.enumerated() {  // input packing + prediction + reading the outputs
            let start = now()
            let provider = try makeInput(item.model, inputs, index: 0, size: size, mean: index.input.mean)
            _ = try outputs(of: item.model.prediction(from: provider), info.output_map)
            if timed { totalMs[i].append(milliseconds(since: start)) }
        }
    }

    var results: [[String: Any]] = []
    for (i, item) in loaded.enumerated() {
        var candidate: [String: [Float]] = Dictionary(uniqueKeysWithValues: outputNames.map { ($0, [Float]()) })
        for g in 0..<count {
            let provider = try makeInput(item.model, inputs, index: g, size: size, mean: index.input.mean)
            for (name, values) in try outputs(of: item.model.prediction(from: provider), info.output_map) {
                candidate[name]!.append(contentsOf: values)
            }
        }
        var parity = tensorParity(reference, candidate, bounds: info.error_bounds)
        parity["precision"] = orNull(info.precision)
        parity["images"] = index.images
        let total = summarize(totalMs[i])
        results.append([
            "label": "\(fileName)@\(item.units)",
            "file": fileName,
            "precision": orNull(info.precision),
            "runtime": "coreml",
            "compute_units": item.units,
            "threads": NSNull(),
            "input_size": size,
            "compile_ms": compileMs,
            "load_ms": item.loadMs,
            "first_run_ms": item.firstRunMs,
            "model_ms": summarize(modelMs[i]),
            "total_ms": total,
            "total_scope": "input packing + prediction + output reading (no letterbox, no NMS)",
            "throughput": 1000.0 / (total["mean"] as! Double),
            "model_throughput": 1000.0 / (summarize(modelMs[i])["mean"] as! Double),
            "peak_rss_mb": peakRSSMegabytes(),
            "memory_scope": "process",
            "parity": parity,
        ])
    }
    let failed = results.filter { ($0["parity"] as! [String: Any])["status"] as! String != "pass" }.map { $0["label"] as! String }
    return [
        "schema": "featherface-bench/1",
        "harness": "swift",
        "created": ISO8601DateFormatter().string(from: Date()),
        "device": describeDevice(),
        "settings": [
            "runs": options.runs, "warmup": options.warmup, "compute_units": options.computeUnits,
            "schedule": "interleaved: each round runs the model at every compute unit in turn, then the full call at every unit",
        ] as [String: Any],
        "results": results,
        "parity": failed.isEmpty ? "pass" : "fail",
        "parity_failures": failed,
        "process_peak_rss_mb": peakRSSMegabytes(),
    ]
}

/// JSON text of a report (non-finite numbers become null: JSON has no Infinity).
public func jsonString(_ report: [String: Any]) throws -> String {
    func clean(_ value: Any) -> Any {
        if let dictionary = value as? [String: Any] { return dictionary.mapValues(clean) }
        if let array = value as? [Any] { return array.map(clean) }
        if let number = value as? Double, !number.isFinite { return NSNull() }
        return value
    }
    let data = try JSONSerialization.data(withJSONObject: clean(report), options: [.prettyPrinted, .sortedKeys])
    return String(decoding: data, as: UTF8.self)
}

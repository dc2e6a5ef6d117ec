import Foundation

/// The repository root: `SARVAM_ROOT` when set, else the first folder above this file that holds
/// both Package.swift and .git (a scratch package pointing at the sources through symlinks has no .git).
public func repositoryRoot(file: StaticString = #filePath) -> URL {
    if let root = ProcessInfo.processInfo.environment["SARVAM_ROOT"] { return URL(fileURLWithPath: root) }
    var url = URL(fileURLWithPath: "\(file)").resolvingSymlinksInPath().deletingLastPathComponent()
    let fm = FileManager.default
    while url.path != "/" {
        if fm.fileExists(atPath: url.appendingPathComponent("Package.swift").path),
           fm.fileExists(atPath: url.appendingPathComponent(".git").path) {
            return url
        }
        url.deleteLastPathComponent()
    }
    preconditionFailure("no repository (Package.swift + .git) above \(file); set SARVAM_ROOT")
}

/// `../shared/reference` beside the repository (where CI and developers have the shared folder).
public func referenceDirectory() -> URL {
    repositoryRoot().deletingLastPathComponent().appendingPathComponent("shared/reference")
}

/// The default model converted into `weights/` by tools/fetch-model (the test command runs it).
public func defaultModelPath(variant: String? = nil) -> URL {
    let name = variant.map { "qwen2.5-coder-0.5b-instruct-\($0).sarvam" } ?? "qwen2.5-coder-0.5b-instruct.sarvam"
    return repositoryRoot().appendingPathComponent("weights").appendingPathComponent(name)
}

/// The default model's GGUF in the download cache (`~/.cache/sarvam`, or `SARVAM_CACHE`).
public func defaultGGUFPath() -> URL {
    let cache = ProcessInfo.processInfo.environment["SARVAM_CACHE"]
        ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/sarvam").path
    return URL(fileURLWithPath: cache).appendingPathComponent("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
}

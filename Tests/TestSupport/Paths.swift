import Foundation

/// The repository root: `SARVAM_ROOT` when set, else the first folder above this file that holds
/// both Package.swift and .git (a scratch package pointing at the sources through symlinks has no .git).
public func repositoryRoot(file: StaticString = #filePath) -> URL {
    if let root = ProcessInfo.processInfo.environment["SARVAM_ROOT"] { return URL(fileURLWithPath: root) }
    var url = URL(fileURLWithPath: "\(file)").resolvingSymlinksInPath().deletingLastPathComponent()
    let fm = FileManager.default
    while url.path != "/" {
        if fm.fileExists(atPath: url.appendingPathComponent("Package.swift").path),
            fm.fileExists(atPath: url.appendingPathComponent(".git").path)
        {
            return url
        }
        url.deleteLastPathComponent()
    }
    preconditionFailure("no repository (Package.swift + .git) above \(file); set SARVAM_ROOT")
}

/// `Tests/Fixtures`: golden data computed outside the project (its README says from what and how).
public func fixturesDirectory() -> URL {
    repositoryRoot().appendingPathComponent("Tests").appendingPathComponent("Fixtures")
}

/// A fixture file that is missing or unreadable: the tests that need it fail with this, never skip,
/// because the fixtures are part of the repository.
public struct MissingFixture: Error, CustomStringConvertible {
    public let path: String
    public var description: String {
        "missing fixture \(path): Tests/Fixtures is part of the repository (see Tests/Fixtures/README.md); restore it with git"
    }
}

/// The contents of `Tests/Fixtures/<name>`; throws `MissingFixture` naming the path when it cannot be read.
public func fixtureData(_ name: String) throws -> Data {
    let url = fixturesDirectory().appendingPathComponent(name)
    guard let data = FileManager.default.contents(atPath: url.path) else { throw MissingFixture(path: url.path) }
    return data
}

/// The default model converted into `weights/` by tools/fetch-model (the test command runs it).
public func defaultModelPath(variant: String? = nil) -> URL {
    let name = variant.map { "qwen2.5-coder-0.5b-instruct-\($0).sarvam" } ?? "qwen2.5-coder-0.5b-instruct.sarvam"
    return repositoryRoot().appendingPathComponent("weights").appendingPathComponent(name)
}

/// The default model's GGUF in the download cache (`~/.cache/sarvam`, or `SARVAM_CACHE`).
public func defaultGGUFPath() -> URL {
    let cache =
        ProcessInfo.processInfo.environment["SARVAM_CACHE"]
        ?? FileManager.default.homeDirectoryForCurrentUser.appendingPathComponent(".cache/sarvam").path
    return URL(fileURLWithPath: cache).appendingPathComponent("qwen2.5-coder-0.5b-instruct-q4_k_m.gguf")
}

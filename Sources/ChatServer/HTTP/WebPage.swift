import Foundation
import HTTPTypes
import Hummingbird

/// The chat page: `Web/index.html`, `app.js` and `app.css`. SwiftPM compiles them into the binary
/// (`.embedInCode` in Package.swift generates `PackageResources`), so `sarvam` serves the same page
/// from wherever it is run, with no resource bundle to ship beside it, and a missing file is a build
/// error rather than an empty page.
///
/// The page loads nothing from elsewhere (no CDN), and model and user text only reaches it through
/// `textContent` and text nodes. The Content-Security-Policy holds the browser to this: scripts and
/// styles from these files only, nothing inline, requests to this origin only.
enum WebPage {
    static let contentSecurityPolicy = "default-src 'self'; img-src 'self' data:; base-uri 'none'; form-action 'none'"

    static let assets: [WebAsset] = [
        WebAsset(path: "/", contentType: "text/html; charset=utf-8", bytes: PackageResources.index_html),
        WebAsset(path: "/app.js", contentType: "text/javascript; charset=utf-8", bytes: PackageResources.app_js),
        WebAsset(path: "/app.css", contentType: "text/css; charset=utf-8", bytes: PackageResources.app_css),
    ]

    static func addRoutes(to router: Router<ServerContext>) {
        for asset in assets {
            router.get(RouterPath(asset.path)) { request, _ in asset.response(to: request) }
        }
    }
}

/// One file of the page with its validator. Served with `Cache-Control: no-cache`: the browser keeps
/// a copy but asks each time, and an unchanged file costs a 304. The paths carry no version, so a
/// longer lifetime could pair a new page with an old script after an upgrade.
struct WebAsset: Sendable {
    let path: String
    let contentType: String
    let body: ByteBuffer
    /// A strong validator: the first 16 bytes of the SHA-256 of the content, quoted.
    let etag: String

    init(path: String, contentType: String, bytes: [UInt8]) {
        precondition(!bytes.isEmpty, "the embedded page file for \(path) is empty")
        self.path = path
        self.contentType = contentType
        body = ByteBuffer(bytes: bytes)
        etag = "\"" + Data(SHA256.hash(bytes).prefix(16)).hexString + "\""
    }

    func response(to request: Request) -> Response {
        var headers = HTTPFields()
        headers[.cacheControl] = "no-cache"
        headers[.eTag] = etag
        if let tags = request.headers[.ifNoneMatch], Self.matches(tags, etag) {
            return Response(status: .notModified, headers: headers)
        }
        headers[.contentType] = contentType
        headers[.xContentTypeOptions] = "nosniff"
        headers[.contentSecurityPolicy] = WebPage.contentSecurityPolicy
        return Response(status: .ok, headers: headers, body: .init(byteBuffer: body))
    }

    /// `If-None-Match`: `*` or a list of entity tags, compared weakly (RFC 9110 13.1.2).
    static func matches(_ ifNoneMatch: String, _ etag: String) -> Bool {
        ifNoneMatch.split(separator: ",").contains { candidate in
            var tag = candidate.trimmingCharacters(in: .whitespaces)
            if tag.hasPrefix("W/") { tag.removeFirst(2) }
            return tag == "*" || tag == etag
        }
    }
}

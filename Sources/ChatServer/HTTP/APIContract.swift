import Hummingbird

/// The API contract, `GET /openapi.yaml` (no key): the OpenAPI 3.1 description of every route,
/// compiled into the binary like the page (`Web/openapi.yaml`; `docs/openapi.yaml` links to it).
enum APIContract {
    static let asset = WebAsset(
        path: "/openapi.yaml", contentType: "application/yaml; charset=utf-8", bytes: PackageResources.openapi_yaml)

    static func addRoutes(to router: Router<ServerContext>) {
        router.get(RouterPath(asset.path)) { request, _ in asset.response(to: request) }
    }
}

// swift-tools-version:5.9
// The Swift client: the Swift and C header that uniffi-bindgen generates from the
// `sluiceway-uniffi` library (committed, checked by `make test-swift`), a small idiomatic layer
// (AsyncSequence over poll), and tests. Build the library first (see the README):
//   cargo build --release -p sluiceway-uniffi
//   swift build -Xlinker -L../../target/release
import PackageDescription

let package = Package(
    name: "Sluiceway",
    platforms: [.macOS(.v12), .iOS(.v15)],
    products: [
        .library(name: "Sluiceway", targets: ["Sluiceway"]),
    ],
    targets: [
        // The C declarations of the library's exported functions; links libsluiceway_uniffi.
        .systemLibrary(name: "SluicewayFFI", path: "Sources/SluicewayFFI"),
        .target(
            name: "Sluiceway",
            dependencies: ["SluicewayFFI"],
            path: "Sources/Sluiceway"
        ),
        .testTarget(
            name: "SluicewayTests",
            dependencies: ["Sluiceway"],
            path: "Tests/SluicewayTests"
        ),
        .executableTarget(
            name: "Quickstart",
            dependencies: ["Sluiceway"],
            // main.swift is a symlink to examples/quickstart.swift (SwiftPM wants sources
            // inside the package).
            path: "Sources/Quickstart"
        ),
    ]
)

//! `uniffi-bindgen`, built from the same uniffi version as `sluiceway-uniffi`; generates the
//! Kotlin and Swift sources from the debug library (`make test-kotlin`, `make test-swift`).

fn main() {
    uniffi::uniffi_bindgen_main()
}

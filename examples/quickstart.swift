// Sluiceway quickstart (Swift), the same steps in every language: create a topic, produce ten
// records, consume and commit them with a local offset store, replay from the beginning.
// Start a broker (`make run`), then from bindings/swift:
//   swift run -Xlinker -L../../target/release Quickstart [HOST:PORT]
import Foundation
import Sluiceway

let bootstrap = CommandLine.arguments.count > 1 ? CommandLine.arguments[1] : "127.0.0.1:9292"
let store = FileManager.default.temporaryDirectory.appendingPathComponent("sluiceway-quickstart").path

let admin = try Admin(config: ["bootstrap.servers": bootstrap])
do {
    _ = try admin.createTopicBlocking(name: "quickstart", partitions: 3, replicationFactor: nil, configs: [:])
} catch let e as SluicewayError where e.code == "TOPIC_ALREADY_EXISTS" {
    // created by an earlier run
}

let producer = try Producer(config: ["bootstrap.servers": bootstrap])
let records = (0..<10).map { ProducerRecord(topic: "quickstart", value: Data("hello \($0)".utf8), partition: 0) }
for delivered in try await producer.sendBatch(records: records) {
    guard let metadata = delivered.metadata else { throw SluicewayError.Failed(code: delivered.error!.code, detail: delivered.error!.message, retriable: delivered.error!.retriable) }
    print("delivered at offset \(metadata.offset ?? -1)")
}
try await producer.close(timeout: nil)

let consumer = try Consumer(config: [
    "bootstrap.servers": bootstrap,
    "auto.offset.reset": "earliest",
    "enable.auto.commit": "false",
    "offset.store.dir": store,
])
try consumer.assign(partitions: [TopicPartition(topic: "quickstart", partition: 0)])
var seen = 0
while seen < 10 {
    let batch = try await consumer.poll(timeout: 5)
    guard !batch.isEmpty else { fatalError("no records within 5 s") }
    for record in batch {
        print("consumed offset \(record.offset): \(String(decoding: record.value ?? Data(), as: UTF8.self))")
    }
    seen += batch.count
}
try await consumer.commit()
try consumer.seekToBeginningBlocking(partitions: nil)
let replay = try await consumer.poll(timeout: 5)
guard let first = replay.first else { fatalError("nothing replayed") }
print("replayed from offset \(first.offset)")
try await consumer.close(timeout: nil)

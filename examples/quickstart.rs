//! Sluiceway quickstart (Rust), the same steps in every language: create a topic, produce ten
//! records, consume and commit them with a local offset store, replay from the beginning.
//! Start a broker (`make run`), then `cargo run -p sluiceway-core --example quickstart`.

use std::time::Duration;

use sluiceway_core::ErrorCode;
use sluiceway_core::client::*;

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::args().nth(1).unwrap_or("127.0.0.1:9292".into());
    let store = std::env::temp_dir().join("sluiceway-quickstart");
    run(&bootstrap, store.to_str().ok_or("temp dir is not UTF-8")?).await
}

/// The quickstart's steps (the integration tests run this too).
pub async fn run(bootstrap: &str, store: &str) -> Result<(), Box<dyn std::error::Error>> {
    let admin = Admin::new(AdminConfig::from_map([("bootstrap.servers", bootstrap)])?).await?;
    match admin.create_topic(NewTopic::new("quickstart", 3)).await {
        Err(e) if e.code() != ErrorCode::TopicAlreadyExists => return Err(e.into()),
        _ => {}
    }

    let producer = Producer::new(ProducerConfig::from_map([(
        "bootstrap.servers",
        bootstrap,
    )])?)
    .await?;
    let records =
        (0..10).map(|i| ProducerRecord::new("quickstart", format!("hello {i}")).partition(0));
    for delivered in producer.send_batch(records.collect()).await?.wait().await {
        println!("delivered at offset {}", delivered?.offset.ok_or("acks=0")?);
    }
    producer.close(None).await?;

    let consumer = Consumer::new(ConsumerConfig::from_map([
        ("bootstrap.servers", bootstrap),
        ("auto.offset.reset", "earliest"),
        ("enable.auto.commit", "false"),
        ("offset.store.dir", store),
    ])?)
    .await?;
    consumer.assign(vec![TopicPartition::new("quickstart", 0)])?;
    let mut seen = 0;
    while seen < 10 {
        let records = consumer.poll(Duration::from_secs(5)).await?;
        if records.is_empty() {
            return Err("no records within 5 s".into());
        }
        for record in &records {
            println!("consumed offset {}: {:?}", record.offset, record.value);
        }
        seen += records.len();
    }
    consumer.commit().await?;
    consumer.seek_to_beginning(None).await?;
    let replay = consumer.poll(Duration::from_secs(5)).await?;
    println!(
        "replayed from offset {}",
        replay.first().ok_or("nothing replayed")?.offset
    );
    consumer.close(None).await?;
    Ok(())
}

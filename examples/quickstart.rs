//! Sluiceway quickstart (Rust): create a topic, produce, consume, commit, seek to the beginning.
//! The same steps as every other language's quickstart.
//!
//! Run a broker (`sluiceway broker --data-dir /tmp/sluiceway`), then:
//! `cargo run -p sluiceway-core --example quickstart -- 127.0.0.1:9292`
//! (or set `SLUICEWAY_BOOTSTRAP`; the default is 127.0.0.1:9292).

use std::time::Duration;

use sluiceway_core::ErrorCode;
use sluiceway_core::client::{
    Admin, AdminConfig, Consumer, ConsumerConfig, NewTopic, OffsetReset, Producer, ProducerConfig,
    ProducerRecord, TopicPartition,
};

#[tokio::main]
async fn main() -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = std::env::args()
        .nth(1)
        .or_else(|| std::env::var("SLUICEWAY_BOOTSTRAP").ok())
        .unwrap_or_else(|| "127.0.0.1:9292".to_owned());
    let store = std::env::temp_dir().join("sluiceway-quickstart-offsets");
    run(&bootstrap, &store).await
}

/// The quickstart's steps against `bootstrap`, keeping consumer offsets under `store`.
/// (The broker's integration tests run this too.)
pub async fn run(
    bootstrap: &str,
    store: &std::path::Path,
) -> Result<(), Box<dyn std::error::Error>> {
    let bootstrap = bootstrap.to_owned();
    let topic = "quickstart";

    // 1. Create the topic (an existing one is fine).
    let admin = Admin::new(AdminConfig::new(&bootstrap)).await?;
    match admin.create_topic(NewTopic::new(topic, 3)).await {
        Ok(_) => println!("created topic {topic}"),
        Err(e) if e.code() == ErrorCode::TopicAlreadyExists => println!("topic {topic} exists"),
        Err(e) => return Err(e.into()),
    }

    // 2. Produce ten keyed messages to partition 0 and wait for their offsets.
    let producer = Producer::new(ProducerConfig::from_map([
        ("bootstrap.servers", bootstrap.as_str()),
        ("acks", "all"),
    ])?)
    .await?;
    let records = (0..10)
        .map(|i| {
            ProducerRecord::new(topic, format!("hello {i}"))
                .key(format!("k{i}"))
                .partition(0)
        })
        .collect();
    for delivery in producer.send_batch(records).await {
        let m = delivery.await?;
        println!(
            "delivered to {}-{} at offset {:?}",
            m.topic, m.partition, m.offset
        );
    }
    producer.close().await?;

    // 3. Consume partition 0 from the beginning with a local offset store, then commit.
    let config = ConsumerConfig::new(&bootstrap)
        .auto_offset_reset(OffsetReset::Earliest)
        .enable_auto_commit(false)
        .offset_store_dir(store);
    let consumer = Consumer::new(config).await?;
    let tp = TopicPartition::new(topic, 0);
    consumer.assign(vec![tp.clone()])?;
    let mut seen = 0;
    while seen < 10 {
        let batch = consumer.poll(Duration::from_secs(5)).await?;
        if batch.is_empty() {
            break;
        }
        for r in &batch {
            println!(
                "consumed offset {} value {:?}",
                r.offset,
                r.value.as_deref().map(String::from_utf8_lossy)
            );
        }
        seen += batch.len();
    }
    consumer.commit().await?;
    println!(
        "committed position {:?} in {}",
        consumer.committed(&tp),
        store.display()
    );

    // 4. Replay: seek to the beginning and read the first record again.
    consumer
        .seek_to_beginning(std::slice::from_ref(&tp))
        .await?;
    let again = consumer.poll(Duration::from_secs(5)).await?;
    if let Some(r) = again.first() {
        println!("after seek to beginning: offset {}", r.offset);
    }
    consumer.close().await?;
    Ok(())
}

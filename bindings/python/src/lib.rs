//! `sluiceway._native`: the Python binding of the client core. It converts types, calls the
//! core's blocking entry points with the GIL released (`Python::detach`), bridges the core's
//! async methods to asyncio futures, and maps errors. Nothing else: every default, retry,
//! batch and position rule lives in `sluiceway_core::client` (see "API boundaries" in
//! `docs/ARCHITECTURE.md`). The idiomatic Python API is `python/sluiceway/*.py` over this
//! module; its types are in `python/sluiceway/_native.pyi`, kept in step by mypy --strict.
//!
//! - Errors: the Python package registers its exception classes (`sluiceway.errors`, one per
//!   `ErrorCode`) with [`register_errors`]; [`to_py_err`] picks the class by the code's name
//!   and sets `.code`, `.retriable` and the cause chain.
//! - Ctrl-C: at import the module installs the core's interrupt check
//!   (`client::set_interrupt_check`), which runs `PyErr_CheckSignals` every 100 ms while a
//!   blocking call waits; a raised `KeyboardInterrupt` is kept and re-raised in place of the
//!   core's `Error::Interrupted`.
//! - asyncio: [`bridge`] spawns the core future on the client runtime (`client::spawn`, no
//!   thread per call) and completes an asyncio future through `loop.call_soon_threadsafe`;
//!   cancelling the asyncio future aborts the task (core calls are cancel-safe).

/// The binding's Rust allocations only (see `Cargo.toml`); the host's are its own.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

use std::cell::RefCell;
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use pyo3::exceptions::{PyKeyboardInterrupt, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyBytes, PyDict, PyList, PyString, PyTuple, PyType};
use sluiceway_core::client::{
    self, Admin, AdminConfig, BatchDelivery, Consumer, ConsumerConfig, ConsumerRecord,
    DeliveryFuture, NewTopic, OffsetSpec, PartitionOffset, PollBatch, Producer, ProducerConfig,
    ProducerRecord, RebalanceEvent, RecordHeader, RecordMetadata, TopicPartition,
};
use sluiceway_core::{Error, ErrorCode, Offset};

// ---------------------------------------------------------------------------------------------
// Errors

/// `code name → exception class`, registered by `sluiceway.errors` at import.
static ERROR_CLASSES: PyOnceLock<Py<PyDict>> = PyOnceLock::new();

thread_local! {
    /// The `KeyboardInterrupt` (or other signal handler exception) raised by the interrupt
    /// check on this thread, re-raised when the interrupted call returns.
    static PENDING_SIGNAL: RefCell<Option<PyErr>> = const { RefCell::new(None) };
}

/// The core's interrupt check: runs Python's signal handlers (they only run on the main
/// thread; elsewhere this is a no-op) and keeps the exception one raised.
fn check_signals() -> bool {
    Python::attach(|py| match py.check_signals() {
        Ok(()) => false,
        Err(e) => {
            PENDING_SIGNAL.with(|p| *p.borrow_mut() = Some(e));
            true
        }
    })
}

/// Registers the exception classes by code name (called once by `sluiceway.errors`).
#[pyfunction]
fn register_errors(py: Python<'_>, classes: Bound<'_, PyDict>) -> PyResult<()> {
    ERROR_CLASSES
        .set(py, classes.unbind())
        .map_err(|_| PyRuntimeError::new_err("error classes are already registered"))
}

/// Every core error code: `(name, number, retriable)`, for the test that each has its class.
#[pyfunction]
fn error_codes() -> Vec<(&'static str, i32, bool)> {
    ErrorCode::ALL
        .iter()
        .map(|c| (c.name(), c.as_i32(), c.is_retriable()))
        .collect()
}

/// The Python exception for a core error: its code's class, `.code`, `.retriable`, and the
/// first failure of an undelivered report as `__cause__`.
fn to_py_err(py: Python<'_>, e: Error) -> PyErr {
    if let Error::Interrupted = e {
        return PENDING_SIGNAL
            .with(|p| p.borrow_mut().take())
            .unwrap_or_else(|| PyKeyboardInterrupt::new_err("interrupted"));
    }
    match build_error(py, &e) {
        Ok(err) => err,
        Err(err) => err,
    }
}

fn build_error(py: Python<'_>, e: &Error) -> PyResult<PyErr> {
    let code = e.code();
    let classes = ERROR_CLASSES
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err(format!("{code}: {e}")))?
        .bind(py);
    let class = classes
        .get_item(code.name())?
        .ok_or_else(|| PyRuntimeError::new_err(format!("no exception class for {code}: {e}")))?;
    let exc = class.call1((e.to_string(),))?;
    exc.setattr("code", code.name())?;
    exc.setattr("retriable", e.is_retriable())?;
    if let Error::Undelivered {
        first_error: Some(first),
        ..
    } = e
    {
        let cause = build_error(py, first)?;
        exc.setattr("__cause__", cause.value(py))?;
    }
    Ok(PyErr::from_value(exc))
}

/// Converts a core result, raising the mapped exception.
fn ok<T>(py: Python<'_>, r: sluiceway_core::Result<T>) -> PyResult<T> {
    r.map_err(|e| to_py_err(py, e))
}

// ---------------------------------------------------------------------------------------------
// Arguments

/// A key or value: `bytes`-like or `str` (encoded UTF-8), `None` for none.
fn to_bytes(v: Option<&Bound<'_, PyAny>>, name: &str) -> PyResult<Option<Bytes>> {
    let Some(v) = v else { return Ok(None) };
    if v.is_none() {
        return Ok(None);
    }
    if let Ok(b) = v.cast::<PyBytes>() {
        return Ok(Some(Bytes::copy_from_slice(b.as_bytes())));
    }
    if let Ok(s) = v.cast::<PyString>() {
        return Ok(Some(Bytes::copy_from_slice(s.to_cow()?.as_bytes())));
    }
    if let Ok(b) = v.extract::<Vec<u8>>()
        && !v.is_instance_of::<PyList>()
    {
        return Ok(Some(Bytes::from(b)));
    }
    Err(PyTypeError::new_err(format!(
        "{name} must be bytes, str or None, not {}",
        v.get_type().name()?
    )))
}

/// Record headers as confluent-kafka takes them: a list of `(key, value)` pairs or a dict;
/// keys `str`, values `bytes`, `str` (UTF-8) or `None`. Order is kept (and keys may repeat) in a
/// list.
fn to_headers(v: Option<&Bound<'_, PyAny>>) -> PyResult<Vec<RecordHeader>> {
    let Some(v) = v.filter(|v| !v.is_none()) else {
        return Ok(Vec::new());
    };
    let pairs: Vec<Bound<'_, PyAny>> = match v.cast::<PyDict>() {
        Ok(d) => d.items().iter().collect(),
        Err(_) => v
            .try_iter()
            .map_err(|_| {
                PyTypeError::new_err("headers must be a list of (key, value) pairs or a dict")
            })?
            .collect::<PyResult<_>>()?,
    };
    pairs
        .iter()
        .enumerate()
        .map(|(i, pair)| {
            let (key, value): (Bound<'_, PyAny>, Bound<'_, PyAny>) =
                pair.extract().map_err(|_| {
                    PyTypeError::new_err(format!("headers[{i}] must be a (key, value) pair"))
                })?;
            let key: String = key.extract().map_err(|_| {
                PyTypeError::new_err(format!("headers[{i}]: the key must be a str"))
            })?;
            let value = to_bytes(Some(&value), &format!("headers[{i}] value"))?;
            Ok(RecordHeader { key, value })
        })
        .collect()
}

/// A timeout in seconds (`None`: the core's own bound).
fn to_timeout(t: Option<f64>, name: &str) -> PyResult<Option<Duration>> {
    match t {
        None => Ok(None),
        Some(s) if s.is_finite() && s >= 0.0 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => Err(PyValueError::new_err(format!(
            "{name} must be a non-negative number of seconds, not {s}"
        ))),
    }
}

fn to_partition(p: i64, name: &str) -> PyResult<u32> {
    u32::try_from(p).map_err(|_| {
        PyValueError::new_err(format!("{name} must be a partition number ≥ 0, not {p}"))
    })
}

fn to_offset(o: i64, name: &str) -> PyResult<Offset> {
    u64::try_from(o)
        .map(Offset)
        .map_err(|_| PyValueError::new_err(format!("{name} must be an offset ≥ 0, not {o}")))
}

fn to_tps(parts: Vec<(String, i64)>, name: &str) -> PyResult<Vec<TopicPartition>> {
    parts
        .into_iter()
        .map(|(t, p)| Ok(TopicPartition::new(t, to_partition(p, name)?)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Results

/// A consumed record: frozen, with `bytes` key and value.
#[pyclass(frozen, module = "sluiceway", name = "Record", eq, hash)]
#[derive(Debug, PartialEq, Eq, Hash)]
struct PyRecord {
    topic: Arc<str>,
    #[pyo3(get)]
    partition: u32,
    #[pyo3(get)]
    offset: u64,
    /// Ms since the epoch (−1 when the record has none).
    #[pyo3(get)]
    timestamp: i64,
    key: Option<Bytes>,
    value: Option<Bytes>,
    /// Kafka's record headers, in order (magic 2; empty for magic 0/1 records).
    headers: Vec<RecordHeader>,
}

#[pymethods]
impl PyRecord {
    #[new]
    #[pyo3(signature = (topic, partition, offset, timestamp, key, value, headers = Vec::new()))]
    fn new(
        topic: String,
        partition: u32,
        offset: u64,
        timestamp: i64,
        key: Option<Vec<u8>>,
        value: Option<Vec<u8>>,
        headers: Vec<(String, Option<Vec<u8>>)>,
    ) -> PyRecord {
        PyRecord {
            topic: topic.into(),
            partition,
            offset,
            timestamp,
            key: key.map(Bytes::from),
            value: value.map(Bytes::from),
            headers: headers
                .into_iter()
                .map(|(key, value)| RecordHeader {
                    key,
                    value: value.map(Bytes::from),
                })
                .collect(),
        }
    }

    /// `[(key, value), ...]` as confluent-kafka's `Message.headers()` and aiokafka's
    /// `ConsumerRecord.headers` give them: `str` keys, `bytes` or `None` values, in order.
    #[getter]
    fn headers<'py>(&self, py: Python<'py>) -> Vec<(&str, Option<Bound<'py, PyBytes>>)> {
        self.headers
            .iter()
            .map(|h| {
                (
                    h.key.as_str(),
                    h.value.as_ref().map(|v| PyBytes::new(py, v)),
                )
            })
            .collect()
    }

    #[getter]
    fn topic(&self) -> &str {
        &self.topic
    }

    #[getter]
    fn key<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.key.as_ref().map(|k| PyBytes::new(py, k))
    }

    #[getter]
    fn value<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyBytes>> {
        self.value.as_ref().map(|v| PyBytes::new(py, v))
    }

    /// Like a dataclass: `bytes` keys and values shown as Python shows them.
    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        let show = |b: &Option<Bytes>| -> PyResult<String> {
            match b {
                Some(b) => Ok(PyBytes::new(py, b).repr()?.to_string()),
                None => Ok("None".to_owned()),
            }
        };
        Ok(format!(
            "Record(topic={:?}, partition={}, offset={}, timestamp={}, key={}, value={})",
            &*self.topic,
            self.partition,
            self.offset,
            self.timestamp,
            show(&self.key)?,
            show(&self.value)?,
        ))
    }
}

impl From<ConsumerRecord> for PyRecord {
    fn from(r: ConsumerRecord) -> PyRecord {
        PyRecord {
            topic: r.topic,
            partition: r.partition,
            offset: r.offset.0,
            timestamp: r.timestamp,
            key: r.key,
            value: r.value,
            headers: r.headers,
        }
    }
}

/// `sluiceway.RecordMetadata` (a `NamedTuple`) and `tuple.__new__`, registered by
/// `sluiceway._types` at import: delivery results are built here with one C call per record
/// (`tuple.__new__(RecordMetadata, fields)`), not a Python-level `_make` per record.
static METADATA_CLASS: PyOnceLock<(Py<PyAny>, Py<PyAny>)> = PyOnceLock::new();

/// Registers the `RecordMetadata` class (called once by `sluiceway._types`).
#[pyfunction]
fn register_metadata_class(py: Python<'_>, class: Bound<'_, PyType>) -> PyResult<()> {
    let tuple_new = py.get_type::<PyTuple>().getattr("__new__")?;
    METADATA_CLASS
        .set(py, (class.into_any().unbind(), tuple_new.unbind()))
        .map_err(|_| PyRuntimeError::new_err("RecordMetadata is already registered"))
}

/// Where a record landed: a `RecordMetadata(topic, partition, offset or None with acks=0,
/// timestamp)`; `topic` is the record's topic as a Python string (shared within a batch).
fn metadata<'py>(
    py: Python<'py>,
    topic: &Bound<'py, PyString>,
    m: &RecordMetadata,
) -> PyResult<Bound<'py, PyAny>> {
    let fields = (topic, m.partition, m.offset.map(|o| o.0), m.timestamp).into_pyobject(py)?;
    let (class, tuple_new) = METADATA_CLASS
        .get(py)
        .ok_or_else(|| PyRuntimeError::new_err("sluiceway._types is not imported"))?;
    tuple_new.bind(py).call1((class.bind(py), fields))
}

fn metadata_one(py: Python<'_>, m: RecordMetadata) -> PyResult<Py<PyAny>> {
    metadata(py, &PyString::new(py, &m.topic), &m).map(Bound::unbind)
}

/// A position: `(topic, partition, offset or None)`.
type Position = (String, u32, Option<u64>);

fn positions(ps: Vec<PartitionOffset>) -> Vec<Position> {
    ps.into_iter()
        .map(|p| (p.topic, p.partition, p.offset.map(|o| o.0)))
        .collect()
}

/// A poll's records and events: `(records, [("revoked" | "assigned", positions)])`.
type Polled = (Vec<PyRecord>, Vec<(&'static str, Vec<Position>)>);

fn polled(b: PollBatch) -> Polled {
    let records = b.records.into_iter().map(PyRecord::from).collect();
    let events = b
        .events
        .into_iter()
        .map(|e| match e {
            RebalanceEvent::Revoked(ps) => ("revoked", positions(ps)),
            RebalanceEvent::Assigned(ps) => ("assigned", positions(ps)),
        })
        .collect();
    (records, events)
}

// ---------------------------------------------------------------------------------------------
// asyncio

/// Completes an asyncio future unless it was cancelled meanwhile (runs on the loop's thread).
#[pyfunction]
fn _resolve(fut: &Bound<'_, PyAny>, ok: bool, value: Bound<'_, PyAny>) -> PyResult<()> {
    if fut.call_method0("done")?.is_truthy()? {
        return Ok(());
    }
    if ok {
        fut.call_method1("set_result", (value,))?;
    } else {
        fut.call_method1("set_exception", (value,))?;
    }
    Ok(())
}

/// Aborts the Rust task of an asyncio future that was cancelled.
#[pyclass(frozen)]
struct AbortOnCancel(client::SpawnedTask);

#[pymethods]
impl AbortOnCancel {
    fn __call__(&self, fut: &Bound<'_, PyAny>) -> PyResult<()> {
        if fut.call_method0("cancelled")?.is_truthy()? {
            self.0.abort();
        }
        Ok(())
    }
}

/// Runs a core future on the client runtime and returns an asyncio future (of the running
/// loop) that `convert`s its result, or raises its mapped error.
fn bridge<'py, T, F, C>(py: Python<'py>, fut: F, convert: C) -> PyResult<Bound<'py, PyAny>>
where
    F: Future<Output = sluiceway_core::Result<T>> + Send + 'static,
    T: Send + 'static,
    C: for<'a> FnOnce(Python<'a>, T) -> PyResult<Py<PyAny>> + Send + 'static,
{
    let event_loop = py.import("asyncio")?.call_method0("get_running_loop")?;
    let pyfut = event_loop.call_method0("create_future")?;
    let (lp, pf) = (event_loop.unbind(), pyfut.clone().unbind());
    let task = ok(
        py,
        client::spawn(async move {
            let r = fut.await;
            Python::attach(|py| {
                let (is_ok, value) =
                    match r.map_err(|e| to_py_err(py, e)).and_then(|v| convert(py, v)) {
                        Ok(v) => (true, v.into_bound(py)),
                        Err(e) => (false, e.into_value(py).into_bound(py).into_any()),
                    };
                if let Ok(resolve) = wrap_pyfunction!(_resolve, py) {
                    // A closed loop refuses the call: nobody waits for this future any more.
                    let _ = lp
                        .bind(py)
                        .call_method1("call_soon_threadsafe", (resolve, pf.bind(py), is_ok, value));
                }
            });
        }),
    )?;
    pyfut.call_method1("add_done_callback", (AbortOnCancel(task),))?;
    Ok(pyfut)
}

fn none(py: Python<'_>, _: ()) -> PyResult<Py<PyAny>> {
    Ok(py.None())
}

/// One result per record: its `RecordMetadata`, or the exception for a record that failed.
fn delivery_results(
    py: Python<'_>,
    rs: Vec<sluiceway_core::Result<RecordMetadata>>,
) -> PyResult<Py<PyAny>> {
    let list = PyList::empty(py);
    // Records of one batch share their topic: one Python string for the run of equal topics.
    let mut topic: Option<(Arc<str>, Bound<'_, PyString>)> = None;
    for r in rs {
        match r {
            Ok(m) => {
                let name = match &topic {
                    Some((t, s)) if Arc::ptr_eq(t, &m.topic) || **t == *m.topic => s.clone(),
                    _ => {
                        let s = PyString::new(py, &m.topic);
                        topic = Some((m.topic.clone(), s.clone()));
                        s
                    }
                };
                list.append(metadata(py, &name, &m)?)?
            }
            Err(e) => list.append(to_py_err(py, e).into_value(py))?,
        }
    }
    Ok(list.into_any().unbind())
}

fn timed_out(py: Python<'_>, what: &str) -> PyErr {
    to_py_err(
        py,
        Error::TimedOut(format!("{what} did not complete within the timeout")),
    )
}

// ---------------------------------------------------------------------------------------------
// Producer

#[pyclass(frozen, name = "Producer")]
struct PyProducer(Arc<Producer>);

/// A validated producer configuration: parsing and checking need no I/O, so an asyncio client
/// can reject bad config at construction and connect later with [`PyProducer::connect`].
#[pyclass(frozen, name = "ProducerConfig")]
struct PyProducerConfig(ProducerConfig);

#[pymethods]
impl PyProducerConfig {
    #[new]
    fn new(py: Python<'_>, config: BTreeMap<String, String>) -> PyResult<PyProducerConfig> {
        ok(py, ProducerConfig::from_map(&config)).map(PyProducerConfig)
    }
}

fn record(
    topic: Arc<str>,
    value: Option<&Bound<'_, PyAny>>,
    key: Option<&Bound<'_, PyAny>>,
    partition: Option<i64>,
    timestamp: Option<i64>,
    headers: Option<&Bound<'_, PyAny>>,
) -> PyResult<ProducerRecord> {
    Ok(ProducerRecord {
        topic,
        partition: partition
            .map(|p| to_partition(p, "partition"))
            .transpose()?,
        key: to_bytes(key, "key")?,
        value: to_bytes(value, "value")?,
        timestamp,
        headers: to_headers(headers)?,
    })
}

fn batch(
    topic: &str,
    values: &Bound<'_, PyAny>,
    keys: Option<&Bound<'_, PyAny>>,
) -> PyResult<Vec<ProducerRecord>> {
    let values: Vec<Bound<'_, PyAny>> = values
        .try_iter()
        .map_err(|_| PyTypeError::new_err("values must be an iterable of bytes or str"))?
        .collect::<PyResult<_>>()?;
    let keys: Option<Vec<Bound<'_, PyAny>>> = match keys {
        Some(k) if !k.is_none() => Some(
            k.try_iter()
                .map_err(|_| PyTypeError::new_err("keys must be an iterable of bytes or str"))?
                .collect::<PyResult<_>>()?,
        ),
        _ => None,
    };
    if let Some(k) = &keys
        && k.len() != values.len()
    {
        return Err(PyValueError::new_err(format!(
            "keys has {} items but values has {}",
            k.len(),
            values.len()
        )));
    }
    // One topic string shared by the records.
    let topic: Arc<str> = topic.into();
    values
        .iter()
        .enumerate()
        .map(|(i, v)| {
            let key = keys.as_ref().map(|k| &k[i]);
            record(topic.clone(), Some(v), key, None, None, None)
        })
        .collect()
}

#[pymethods]
impl PyProducer {
    #[new]
    fn new(py: Python<'_>, config: BTreeMap<String, String>) -> PyResult<PyProducer> {
        let config = ok(py, ProducerConfig::from_map(&config))?;
        let p = py.detach(|| Producer::new_blocking(config));
        ok(py, p).map(|p| PyProducer(Arc::new(p)))
    }

    /// An asyncio future of a new producer: bootstraps metadata on the client runtime
    /// (`Producer::new`) without blocking the event loop.
    #[staticmethod]
    fn connect<'py>(
        py: Python<'py>,
        config: &Bound<'py, PyProducerConfig>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let config = config.get().0.clone();
        bridge(py, Producer::new(config), |py, p| {
            Ok(Py::new(py, PyProducer(Arc::new(p)))?.into_any())
        })
    }

    #[pyo3(signature = (topic, value, key=None, partition=None, timestamp=None, headers=None))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments.
    fn send(
        &self,
        py: Python<'_>,
        topic: String,
        value: Option<&Bound<'_, PyAny>>,
        key: Option<&Bound<'_, PyAny>>,
        partition: Option<i64>,
        timestamp: Option<i64>,
        headers: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyDelivery> {
        let rec = record(topic.into(), value, key, partition, timestamp, headers)?;
        let p = self.0.clone();
        let d = py.detach(move || p.send_blocking(rec));
        ok(py, d).map(|d| PyDelivery(Arc::new(d)))
    }

    #[pyo3(signature = (topic, values, keys=None))]
    fn send_batch(
        &self,
        py: Python<'_>,
        topic: &str,
        values: &Bound<'_, PyAny>,
        keys: Option<&Bound<'_, PyAny>>,
    ) -> PyResult<PyBatchDelivery> {
        let records = batch(topic, values, keys)?;
        let p = self.0.clone();
        let d = py.detach(move || p.send_batch_blocking(records));
        ok(py, d).map(|d| PyBatchDelivery(Arc::new(d)))
    }

    #[pyo3(signature = (timeout=None))]
    fn flush(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = to_timeout(timeout, "timeout")?;
        let p = self.0.clone();
        let r = py.detach(move || p.flush_blocking(t));
        ok(py, r)
    }

    #[pyo3(signature = (timeout=None))]
    fn close(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = to_timeout(timeout, "timeout")?;
        let p = self.0.clone();
        let r = py.detach(move || p.close_blocking(t));
        ok(py, r)
    }

    #[pyo3(signature = (topic, value, key=None, partition=None, timestamp=None, headers=None))]
    #[allow(clippy::too_many_arguments)] // Python's keyword arguments.
    fn send_async<'py>(
        &self,
        py: Python<'py>,
        topic: String,
        value: Option<&Bound<'py, PyAny>>,
        key: Option<&Bound<'py, PyAny>>,
        partition: Option<i64>,
        timestamp: Option<i64>,
        headers: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let rec = record(topic.into(), value, key, partition, timestamp, headers)?;
        let p = self.0.clone();
        bridge(py, async move { p.send(rec).await?.await }, metadata_one)
    }

    #[pyo3(signature = (topic, values, keys=None))]
    fn send_batch_async<'py>(
        &self,
        py: Python<'py>,
        topic: &str,
        values: &Bound<'py, PyAny>,
        keys: Option<&Bound<'py, PyAny>>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let records = batch(topic, values, keys)?;
        let p = self.0.clone();
        bridge(
            py,
            async move { Ok(p.send_batch(records).await?.wait().await) },
            delivery_results,
        )
    }

    #[pyo3(signature = (timeout=None))]
    fn flush_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = to_timeout(timeout, "timeout")?;
        let p = self.0.clone();
        bridge(py, async move { p.flush(t).await }, none)
    }

    #[pyo3(signature = (timeout=None))]
    fn close_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = to_timeout(timeout, "timeout")?;
        let p = self.0.clone();
        bridge(py, async move { p.close(t).await }, none)
    }
}

/// The delivery report of one `send`.
#[pyclass(frozen, name = "Delivery")]
struct PyDelivery(Arc<DeliveryFuture>);

#[pymethods]
impl PyDelivery {
    /// Waits up to `timeout` seconds (`None`: until resolved, at the latest by
    /// `delivery.timeout.ms`) and returns the metadata or raises the record's error.
    #[pyo3(signature = (timeout=None))]
    fn result(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let t = to_timeout(timeout, "timeout")?;
        let d = self.0.clone();
        match py.detach(move || d.wait_blocking(t)) {
            Some(r) => metadata_one(py, ok(py, r)?),
            None => Err(timed_out(py, "the delivery")),
        }
    }

    fn done(&self) -> bool {
        self.0.is_done()
    }
}

/// The delivery reports of one `send_batch`, one per record in order.
#[pyclass(frozen, name = "BatchDelivery")]
struct PyBatchDelivery(Arc<BatchDelivery>);

#[pymethods]
impl PyBatchDelivery {
    /// Waits up to `timeout` seconds for every record; one `RecordMetadata` or exception each.
    #[pyo3(signature = (timeout=None))]
    fn results(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<Py<PyAny>> {
        let t = to_timeout(timeout, "timeout")?;
        let d = self.0.clone();
        match py.detach(move || d.wait_blocking(t)) {
            Some(rs) => {
                if rs.iter().any(|r| matches!(r, Err(Error::Interrupted))) {
                    return Err(to_py_err(py, Error::Interrupted));
                }
                delivery_results(py, rs)
            }
            None => Err(timed_out(py, "the batch's delivery")),
        }
    }

    /// Waits up to `timeout` seconds for every record; `None` when all were delivered, else
    /// raises the first failed record's error (`results` tells each record's). Builds no
    /// per-record result.
    #[pyo3(signature = (timeout=None))]
    fn wait(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = to_timeout(timeout, "timeout")?;
        let d = self.0.clone();
        match py.detach(move || d.wait_failures_blocking(t)) {
            Some(Ok(f)) => f.first.map_or(Ok(()), |e| Err(to_py_err(py, e))),
            Some(Err(e)) => Err(to_py_err(py, e)),
            None => Err(timed_out(py, "the batch's delivery")),
        }
    }

    fn done(&self) -> bool {
        self.0.is_done()
    }

    fn __len__(&self) -> usize {
        self.0.len()
    }
}

// ---------------------------------------------------------------------------------------------
// Consumer

#[pyclass(frozen, name = "Consumer")]
struct PyConsumer(Arc<Consumer>);

/// A validated consumer configuration (see [`PyProducerConfig`]).
#[pyclass(frozen, name = "ConsumerConfig")]
struct PyConsumerConfig(ConsumerConfig);

#[pymethods]
impl PyConsumerConfig {
    #[new]
    fn new(py: Python<'_>, config: BTreeMap<String, String>) -> PyResult<PyConsumerConfig> {
        ok(py, ConsumerConfig::from_map(&config)).map(PyConsumerConfig)
    }
}

type Partitions = Option<Vec<(String, i64)>>;

#[pymethods]
impl PyConsumer {
    #[new]
    fn new(py: Python<'_>, config: BTreeMap<String, String>) -> PyResult<PyConsumer> {
        let config = ok(py, ConsumerConfig::from_map(&config))?;
        let c = py.detach(|| Consumer::new_blocking(config));
        ok(py, c).map(|c| PyConsumer(Arc::new(c)))
    }

    /// An asyncio future of a new consumer: opens the offset store and bootstraps metadata on
    /// the client runtime (`Consumer::new`) without blocking the event loop.
    #[staticmethod]
    fn connect<'py>(
        py: Python<'py>,
        config: &Bound<'py, PyConsumerConfig>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let config = config.get().0.clone();
        bridge(py, Consumer::new(config), |py, c| {
            Ok(Py::new(py, PyConsumer(Arc::new(c)))?.into_any())
        })
    }

    fn assign(&self, py: Python<'_>, partitions: Vec<(String, i64)>) -> PyResult<()> {
        let tps = to_tps(partitions, "partitions")?;
        ok(py, self.0.assign(tps))
    }

    fn assignment(&self) -> Vec<(String, u32)> {
        self.0
            .assignment()
            .into_iter()
            .map(|tp| (tp.topic, tp.partition))
            .collect()
    }

    fn subscribe(&self, py: Python<'_>, topics: Vec<String>) -> PyResult<()> {
        let c = self.0.clone();
        let r = py.detach(move || c.subscribe_blocking(topics));
        ok(py, r)
    }

    fn subscription(&self) -> Vec<String> {
        self.0.subscription()
    }

    fn unsubscribe(&self, py: Python<'_>) -> PyResult<()> {
        let c = self.0.clone();
        let r = py.detach(move || c.unsubscribe_blocking());
        ok(py, r)
    }

    /// `(member id, generation)` once joined to a group.
    fn membership(&self) -> Option<(String, i32)> {
        self.0
            .group_membership()
            .map(|m| (m.member_id, m.generation))
    }

    fn poll(&self, py: Python<'_>, timeout: f64) -> PyResult<Vec<PyRecord>> {
        let t = to_timeout(Some(timeout), "timeout")?.unwrap_or_default();
        let c = self.0.clone();
        let r = py.detach(move || c.poll_blocking(t));
        ok(py, r).map(|rs| rs.into_iter().map(PyRecord::from).collect())
    }

    #[pyo3(signature = (timeout, max_records=None))]
    fn poll_batch(
        &self,
        py: Python<'_>,
        timeout: f64,
        max_records: Option<u32>,
    ) -> PyResult<Polled> {
        let t = to_timeout(Some(timeout), "timeout")?.unwrap_or_default();
        let c = self.0.clone();
        let r = py.detach(move || c.poll_batch_blocking(t, max_records));
        ok(py, r).map(polled)
    }

    #[pyo3(signature = (timeout, max_records=None))]
    fn poll_batch_async<'py>(
        &self,
        py: Python<'py>,
        timeout: f64,
        max_records: Option<u32>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = to_timeout(Some(timeout), "timeout")?.unwrap_or_default();
        let c = self.0.clone();
        bridge(
            py,
            async move { c.poll_batch(t, max_records).await },
            |py, b| Ok(polled(b).into_pyobject(py)?.into_any().unbind()),
        )
    }

    fn seek(&self, py: Python<'_>, topic: String, partition: i64, offset: i64) -> PyResult<()> {
        let tp = TopicPartition::new(topic, to_partition(partition, "partition")?);
        ok(py, self.0.seek(&tp, to_offset(offset, "offset")?))
    }

    #[pyo3(signature = (partitions=None))]
    fn seek_to_beginning(&self, py: Python<'_>, partitions: Partitions) -> PyResult<()> {
        let tps = partitions.map(|p| to_tps(p, "partitions")).transpose()?;
        let c = self.0.clone();
        let r = py.detach(move || c.seek_to_beginning_blocking(tps.as_deref()));
        ok(py, r)
    }

    #[pyo3(signature = (partitions=None))]
    fn seek_to_end(&self, py: Python<'_>, partitions: Partitions) -> PyResult<()> {
        let tps = partitions.map(|p| to_tps(p, "partitions")).transpose()?;
        let c = self.0.clone();
        let r = py.detach(move || c.seek_to_end_blocking(tps.as_deref()));
        ok(py, r)
    }

    #[pyo3(signature = (timestamp_ms, partitions=None))]
    fn seek_to_timestamp(
        &self,
        py: Python<'_>,
        timestamp_ms: i64,
        partitions: Partitions,
    ) -> PyResult<()> {
        let tps = partitions.map(|p| to_tps(p, "partitions")).transpose()?;
        let c = self.0.clone();
        let r = py.detach(move || c.seek_to_timestamp_blocking(tps.as_deref(), timestamp_ms));
        ok(py, r)
    }

    fn position(&self, py: Python<'_>, topic: String, partition: i64) -> PyResult<u64> {
        let tp = TopicPartition::new(topic, to_partition(partition, "partition")?);
        let c = self.0.clone();
        let r = py.detach(move || c.position_blocking(&tp));
        ok(py, r).map(|o| o.0)
    }

    fn committed(&self, topic: String, partition: i64) -> PyResult<Option<u64>> {
        let tp = TopicPartition::new(topic, to_partition(partition, "partition")?);
        Ok(self.0.committed(&tp).map(|o| o.0))
    }

    /// Commits the current positions, or the given `(topic, partition, offset)`s.
    #[pyo3(signature = (offsets=None))]
    fn commit(&self, py: Python<'_>, offsets: Option<Vec<(String, i64, i64)>>) -> PyResult<()> {
        let c = self.0.clone();
        let r = match offsets {
            None => py.detach(move || c.commit_blocking()),
            Some(os) => {
                let os = os
                    .into_iter()
                    .map(|(t, p, o)| {
                        Ok((
                            TopicPartition::new(t, to_partition(p, "offsets")?),
                            to_offset(o, "offsets")?,
                        ))
                    })
                    .collect::<PyResult<Vec<_>>>()?;
                py.detach(move || c.commit_offsets_blocking(os))
            }
        };
        ok(py, r)
    }

    fn commit_async<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyAny>> {
        let c = self.0.clone();
        bridge(py, async move { c.commit().await }, none)
    }

    fn pause(&self, py: Python<'_>, partitions: Vec<(String, i64)>) -> PyResult<()> {
        let tps = to_tps(partitions, "partitions")?;
        ok(py, self.0.pause(&tps))
    }

    fn resume(&self, py: Python<'_>, partitions: Vec<(String, i64)>) -> PyResult<()> {
        let tps = to_tps(partitions, "partitions")?;
        ok(py, self.0.resume(&tps))
    }

    fn paused(&self) -> Vec<(String, u32)> {
        self.0
            .paused()
            .into_iter()
            .map(|tp| (tp.topic, tp.partition))
            .collect()
    }

    #[pyo3(signature = (timeout=None))]
    fn close(&self, py: Python<'_>, timeout: Option<f64>) -> PyResult<()> {
        let t = to_timeout(timeout, "timeout")?;
        let c = self.0.clone();
        let r = py.detach(move || c.close_blocking(t));
        ok(py, r)
    }

    #[pyo3(signature = (timeout=None))]
    fn close_async<'py>(
        &self,
        py: Python<'py>,
        timeout: Option<f64>,
    ) -> PyResult<Bound<'py, PyAny>> {
        let t = to_timeout(timeout, "timeout")?;
        let c = self.0.clone();
        bridge(py, async move { c.close(t).await }, none)
    }
}

// ---------------------------------------------------------------------------------------------
// Admin

#[pyclass(frozen, name = "Admin")]
struct PyAdmin(Arc<Admin>);

#[pymethods]
impl PyAdmin {
    #[new]
    fn new(py: Python<'_>, config: BTreeMap<String, String>) -> PyResult<PyAdmin> {
        let config = ok(py, AdminConfig::from_map(&config))?;
        let a = py.detach(|| Admin::new_blocking(config));
        ok(py, a).map(|a| PyAdmin(Arc::new(a)))
    }

    /// Creates a topic; returns its number of partitions.
    #[pyo3(signature = (name, partitions, replication_factor=1, configs=None))]
    fn create_topic(
        &self,
        py: Python<'_>,
        name: String,
        partitions: u32,
        replication_factor: u32,
        configs: Option<BTreeMap<String, String>>,
    ) -> PyResult<usize> {
        let mut t = NewTopic::new(name, partitions).replication_factor(replication_factor);
        t.configs = configs.unwrap_or_default();
        let a = self.0.clone();
        let r = py.detach(move || a.create_topic_blocking(t));
        ok(py, r).map(|m| m.partitions.len())
    }

    fn delete_topic(&self, py: Python<'_>, name: String) -> PyResult<()> {
        let a = self.0.clone();
        let r = py.detach(move || a.delete_topic_blocking(&name));
        ok(py, r)
    }

    /// `(name, partitions, replication factor)` per topic.
    fn list_topics(&self, py: Python<'_>) -> PyResult<Vec<(String, u32, u32)>> {
        let a = self.0.clone();
        let r = py.detach(move || a.list_topics_blocking());
        ok(py, r).map(|ts| {
            ts.into_iter()
                .map(|t| (t.name, t.partitions, t.replication_factor))
                .collect()
        })
    }

    /// `(partitions as (partition, leader, replicas, isr), configs)`.
    #[allow(clippy::type_complexity)]
    fn describe_topic(
        &self,
        py: Python<'_>,
        name: String,
    ) -> PyResult<(
        Vec<(u32, Option<i32>, Vec<i32>, Vec<i32>)>,
        BTreeMap<String, String>,
    )> {
        let a = self.0.clone();
        let r = py.detach(move || a.describe_topic_blocking(&name));
        ok(py, r).map(|d| {
            let parts = d
                .topic
                .partitions
                .into_iter()
                .map(|p| (p.partition, p.leader_id, p.replicas, p.isr))
                .collect();
            (parts, d.configs)
        })
    }

    /// `(group id, state, members, generation)` per group.
    fn list_groups(&self, py: Python<'_>) -> PyResult<Vec<(String, &'static str, u32, i32)>> {
        let a = self.0.clone();
        let r = py.detach(move || a.list_groups_blocking());
        ok(py, r).map(|gs| {
            gs.into_iter()
                .map(|g| (g.group_id, g.state.name(), g.members, g.generation))
                .collect()
        })
    }

    /// `(state, generation, members as (member id, client id, [(topic, partition)]),
    /// offsets as (topic, partition, offset))`.
    #[allow(clippy::type_complexity)]
    fn describe_group(
        &self,
        py: Python<'_>,
        group: String,
    ) -> PyResult<(
        &'static str,
        i32,
        Vec<(String, String, Vec<(String, u32)>)>,
        Vec<Position>,
    )> {
        let a = self.0.clone();
        let r = py.detach(move || a.describe_group_blocking(&group));
        ok(py, r).map(|g| {
            let members = g
                .members
                .into_iter()
                .map(|m| {
                    let parts = m
                        .assignment
                        .into_iter()
                        .map(|tp| (tp.topic, tp.partition))
                        .collect();
                    (m.member_id, m.client_id, parts)
                })
                .collect();
            let offsets = g
                .offsets
                .into_iter()
                .map(|o| {
                    (
                        o.partition.topic,
                        o.partition.partition,
                        o.offset.map(|x| x.0),
                    )
                })
                .collect();
            (g.state.name(), g.generation, members, offsets)
        })
    }

    /// Looks up `(topic, partition, "earliest" | "latest" | timestamp ms)`s: one
    /// `(offset or None, log start, high watermark)` or exception per entry.
    fn list_offsets(
        &self,
        py: Python<'_>,
        specs: Vec<(String, i64, Bound<'_, PyAny>)>,
    ) -> PyResult<Py<PyAny>> {
        let mut req = Vec::with_capacity(specs.len());
        for (t, p, s) in specs {
            let spec = if let Ok(ms) = s.extract::<i64>() {
                OffsetSpec::Timestamp(ms)
            } else {
                match s.extract::<String>().as_deref() {
                    Ok("earliest") => OffsetSpec::Earliest,
                    Ok("latest") => OffsetSpec::Latest,
                    _ => {
                        return Err(PyValueError::new_err(
                            "specs: each spec must be \"earliest\", \"latest\" or a timestamp in ms",
                        ));
                    }
                }
            };
            req.push((TopicPartition::new(t, to_partition(p, "specs")?), spec));
        }
        let a = self.0.clone();
        let r = py.detach(move || a.list_offsets_blocking(&req));
        let list = PyList::empty(py);
        for r in ok(py, r)? {
            match r {
                Ok(l) => list.append((
                    l.offset.map(|o| o.0),
                    l.log_start_offset.0,
                    l.high_watermark.0,
                ))?,
                Err(e) => list.append(to_py_err(py, e).into_value(py))?,
            }
        }
        Ok(list.into_any().unbind())
    }
}

// ---------------------------------------------------------------------------------------------
// The module

/// One decoded record of a message set: offset, timestamp (−1 for none), timestamp type, key,
/// value.
type Decoded = (
    u64,
    i64,
    &'static str,
    Option<Vec<u8>>,
    Option<Vec<u8>>,
    Vec<(String, Option<Vec<u8>>)>,
);

/// Decodes a message set (the bytes of a segment or of a fetch answer) with the core's codec:
/// every record, wrappers decompressed, CRCs checked. For the golden-vector tests (C4).
#[pyfunction]
fn decode_message_set(py: Python<'_>, data: &[u8]) -> PyResult<Vec<Decoded>> {
    let mut out = Vec::new();
    let r = sluiceway_core::format::for_each_record(data, &mut Vec::new(), |r| {
        out.push((
            r.offset.0,
            r.timestamp.0,
            r.timestamp_type.name(),
            r.key.map(<[u8]>::to_vec),
            r.value.map(<[u8]>::to_vec),
            r.headers
                .iter()
                .map(|h| (h.key.to_owned(), h.value.map(<[u8]>::to_vec)))
                .collect(),
        ));
    });
    ok(py, r)?;
    Ok(out)
}

#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    client::set_interrupt_check(check_signals);
    m.add_class::<PyRecord>()?;
    m.add_class::<PyProducer>()?;
    m.add_class::<PyProducerConfig>()?;
    m.add_class::<PyConsumerConfig>()?;
    m.add_class::<PyDelivery>()?;
    m.add_class::<PyBatchDelivery>()?;
    m.add_class::<PyConsumer>()?;
    m.add_class::<PyAdmin>()?;
    m.add_function(wrap_pyfunction!(register_errors, m)?)?;
    m.add_function(wrap_pyfunction!(register_metadata_class, m)?)?;
    m.add_function(wrap_pyfunction!(error_codes, m)?)?;
    m.add_function(wrap_pyfunction!(decode_message_set, m)?)?;
    Ok(())
}

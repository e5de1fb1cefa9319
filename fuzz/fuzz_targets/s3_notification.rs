//! An SQS message body, as S3 (or anyone able to send to the queue) writes it.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let _ = troupe_aws::notifications::decode(data, "documents");
});

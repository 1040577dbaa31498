//! The SPDM 1.1 GET_MEASUREMENTS request and MEASUREMENTS response that an
//! NVIDIA Hopper GPU returns as its attestation report (DMTF DSP0274 1.1.1,
//! the GET_MEASUREMENTS and MEASUREMENTS messages), and the opaque data
//! NVIDIA puts in the response (field types as nvtrust and Trustee decode
//! them).
//!
//! Every length is checked against what is left before it is used, so
//! hostile input gives [`GpuError::Malformed`], never a panic, and nothing is
//! allocated beyond the input's own size.

use std::collections::BTreeMap;

use super::GpuError;

/// SPDM version 1.1, the only one Hopper speaks for attestation.
pub const SPDM_VERSION_1_1: u8 = 0x11;
/// RequestResponseCode of GET_MEASUREMENTS.
const GET_MEASUREMENTS: u8 = 0xe0;
/// RequestResponseCode of MEASUREMENTS.
const MEASUREMENTS: u8 = 0x60;
/// Length of the requester's and the responder's nonces.
pub const SPDM_NONCE_LEN: usize = 32;
/// A GET_MEASUREMENTS request that asks for a signature: version, code,
/// param1, param2, nonce, SlotIDParam.
pub const REQUEST_LEN: usize = 4 + SPDM_NONCE_LEN + 1;
/// The response's signature: ECDSA P-384, r then s, 48 bytes each, big-endian.
pub const SIGNATURE_LEN: usize = 96;
/// DSP0274 caps OpaqueData at 1024 bytes (libspdm's
/// `SPDM_MAX_OPAQUE_DATA_SIZE`).
const MAX_OPAQUE_LEN: usize = 1024;
/// MeasurementSpecification bit 0: the DMTF measurement layout.
const DMTF_SPECIFICATION: u8 = 0x01;
/// Zero bytes tolerated after the signature. NVIDIA's own C++ parser refuses
/// any; Trustee's CoCo capture `hopper_coco_report1` carries exactly one
/// `0x00` there, from the capture rather than the GPU (the other Hopper
/// capture has none). Zeros outside the signature carry nothing, so one is
/// let through; anything else is refused.
const MAX_TRAILING_ZEROS: usize = 1;

/// An attestation report, parsed but not yet verified.
#[derive(Debug, Clone)]
pub struct GpuReport {
    /// The SPDM version both messages carry.
    pub spdm_version: u8,
    /// The requester's nonce, which the verifier chose.
    pub nonce: [u8; SPDM_NONCE_LEN],
    /// The certificate slot the request names.
    pub slot_id: u8,
    /// Which measurements were asked for (0xff: all).
    pub measurement_operation: u8,
    /// The measurement values by index (DMTF measurement value, without the
    /// type and size that precede it).
    pub measurements: BTreeMap<u8, Vec<u8>>,
    /// The GPU's own nonce.
    pub responder_nonce: [u8; SPDM_NONCE_LEN],
    /// NVIDIA's opaque data fields.
    pub opaque: OpaqueData,
    /// The signature, r then s.
    pub signature: [u8; SIGNATURE_LEN],
    /// How many bytes from the start the signature covers: the request and
    /// the response up to the signature.
    pub signed_len: usize,
}

/// Reads fields off the front of a byte string, each length checked.
struct Cursor<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Cursor<'a> {
    fn take(&mut self, len: usize, what: &'static str) -> Result<&'a [u8], GpuError> {
        let field = self.at.checked_add(len).and_then(|end| self.bytes.get(self.at..end)).ok_or_else(|| {
            GpuError::malformed(
                what,
                format!("needs {len} bytes at offset {}, the input has {}", self.at, self.bytes.len()),
            )
        })?;
        self.at += len;
        Ok(field)
    }

    fn u8(&mut self, what: &'static str) -> Result<u8, GpuError> {
        Ok(self.take(1, what)?[0])
    }

    fn u16(&mut self, what: &'static str) -> Result<u16, GpuError> {
        let b = self.take(2, what)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u24(&mut self, what: &'static str) -> Result<usize, GpuError> {
        let b = self.take(3, what)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], 0]) as usize)
    }

    fn array<const N: usize>(&mut self, what: &'static str) -> Result<[u8; N], GpuError> {
        let mut out = [0; N];
        out.copy_from_slice(self.take(N, what)?);
        Ok(out)
    }

    fn rest(&self) -> &'a [u8] {
        self.bytes.get(self.at..).unwrap_or_default()
    }
}

/// Parses an attestation report: the GET_MEASUREMENTS request (with the
/// signature requested, so with a nonce) followed by the MEASUREMENTS
/// response with its signature.
pub fn parse_report(report: &[u8]) -> Result<GpuReport, GpuError> {
    if report.len() > super::MAX_REPORT_LEN {
        return Err(GpuError::TooLarge {
            what: "GPU report (bytes)",
            size: report.len(),
            limit: super::MAX_REPORT_LEN,
        });
    }
    let mut c = Cursor { bytes: report, at: 0 };

    // The request (DSP0274 1.1.1, GET_MEASUREMENTS request).
    let spdm_version = c.u8("request SPDMVersion")?;
    if spdm_version != SPDM_VERSION_1_1 {
        return Err(GpuError::malformed(
            "request SPDMVersion",
            format!("{spdm_version:#04x}, expected 0x11 (SPDM 1.1)"),
        ));
    }
    let code = c.u8("request RequestResponseCode")?;
    if code != GET_MEASUREMENTS {
        return Err(GpuError::malformed("request RequestResponseCode", format!("{code:#04x}, expected 0xe0")));
    }
    let param1 = c.u8("request Param1")?;
    if param1 & 1 == 0 {
        return Err(GpuError::malformed("request Param1", "the request did not ask for a signature"));
    }
    let measurement_operation = c.u8("request Param2")?;
    let nonce = c.array::<SPDM_NONCE_LEN>("request Nonce")?;
    let slot_id = c.u8("request SlotIDParam")? & 0x0f;

    // The response (DSP0274 1.1.1, MEASUREMENTS response).
    let version = c.u8("response SPDMVersion")?;
    if version != spdm_version {
        return Err(GpuError::malformed(
            "response SPDMVersion",
            format!("{version:#04x}, the request's is {spdm_version:#04x}"),
        ));
    }
    let code = c.u8("response RequestResponseCode")?;
    if code != MEASUREMENTS {
        return Err(GpuError::malformed("response RequestResponseCode", format!("{code:#04x}, expected 0x60")));
    }
    let _param1 = c.u8("response Param1")?;
    let response_slot = c.u8("response Param2")? & 0x0f;
    if response_slot != slot_id {
        return Err(GpuError::malformed(
            "response Param2",
            format!("slot {response_slot}, the request named {slot_id}"),
        ));
    }
    let blocks = c.u8("response NumberOfBlocks")?;
    let record_len = c.u24("response MeasurementRecordLength")?;
    let record = c.take(record_len, "response MeasurementRecord")?;
    let measurements = parse_record(record, blocks)?;
    let responder_nonce = c.array::<SPDM_NONCE_LEN>("response Nonce")?;
    let opaque_len = usize::from(c.u16("response OpaqueLength")?);
    if opaque_len > MAX_OPAQUE_LEN {
        return Err(GpuError::malformed("response OpaqueLength", format!("{opaque_len}, more than 1024")));
    }
    let opaque = OpaqueData::parse(c.take(opaque_len, "response OpaqueData")?)?;
    let signed_len = c.at;
    let signature = c.array::<SIGNATURE_LEN>("response Signature")?;
    let trailing = c.rest();
    if trailing.len() > MAX_TRAILING_ZEROS || trailing.iter().any(|b| *b != 0) {
        return Err(GpuError::malformed(
            "GPU report",
            format!(
                "{} bytes after the signature ({})",
                trailing.len(),
                hex::encode(&trailing[..trailing.len().min(16)])
            ),
        ));
    }
    Ok(GpuReport {
        spdm_version,
        nonce,
        slot_id,
        measurement_operation,
        measurements,
        responder_nonce,
        opaque,
        signature,
        signed_len,
    })
}

/// The measurement record: `blocks` measurement blocks, each an index, a
/// measurement specification, a size and a DMTF measurement (type, value
/// size, value), filling the record exactly.
fn parse_record(record: &[u8], blocks: u8) -> Result<BTreeMap<u8, Vec<u8>>, GpuError> {
    let mut c = Cursor { bytes: record, at: 0 };
    let mut out = BTreeMap::new();
    for _ in 0..blocks {
        let index = c.u8("measurement block Index")?;
        if index == 0 || index == 0xff {
            return Err(GpuError::malformed("measurement block Index", format!("{index} is reserved")));
        }
        let spec = c.u8("measurement block MeasurementSpecification")?;
        if spec != DMTF_SPECIFICATION {
            return Err(GpuError::malformed(
                "measurement block MeasurementSpecification",
                format!("{spec:#04x} at index {index}, expected 0x01 (DMTF)"),
            ));
        }
        let size = usize::from(c.u16("measurement block MeasurementSize")?);
        let mut m = Cursor { bytes: c.take(size, "measurement block Measurement")?, at: 0 };
        let _value_type = m.u8("DMTF measurement value type")?;
        let value_len = usize::from(m.u16("DMTF measurement value size")?);
        let value = m.take(value_len, "DMTF measurement value")?;
        if !m.rest().is_empty() {
            return Err(GpuError::malformed(
                "measurement block MeasurementSize",
                format!("{size} at index {index}, but the DMTF measurement takes {}", 3 + value_len),
            ));
        }
        if out.insert(index, value.to_vec()).is_some() {
            return Err(GpuError::malformed("measurement record", format!("index {index} appears twice")));
        }
    }
    if !c.rest().is_empty() {
        return Err(GpuError::malformed(
            "measurement record",
            format!("{} bytes left after {blocks} blocks", c.rest().len()),
        ));
    }
    Ok(out)
}

/// NVIDIA's opaque data: a list of fields, each a type (u16), a size (u16)
/// and that many bytes, filling the opaque data exactly.
#[derive(Debug, Clone, Default)]
pub struct OpaqueData {
    /// The fields by type.
    pub fields: BTreeMap<u16, Vec<u8>>,
}

/// Field types NVIDIA defines (nvtrust's `OpaqueDataParser`, Trustee's
/// `OpaqueDataType`), by the names NVIDIA's claims use, and whether the value
/// is text.
const OPAQUE_NAMES: [(u16, &str, bool); 30] = [
    (1, "cert_issuer_name", true),
    (2, "cert_authority_key_identifier", false),
    (3, "driver_version", true),
    (4, "gpu_info", false),
    (5, "id_sku", false),
    (6, "vbios_version", false),
    (7, "manufacturer_id", false),
    (8, "tamper_detection", false),
    (9, "smc", false),
    (10, "vpr", false),
    (11, "nvdec0_status", true),
    (12, "measurement_count", false),
    (13, "cpr_info", false),
    (14, "board_id", false),
    (15, "chip_sku", true),
    (16, "chip_sku_mod", true),
    (17, "project", true),
    (18, "project_sku", true),
    (19, "project_sku_mod", false),
    (20, "fwid", false),
    (21, "protected_pcie_status", true),
    (22, "switch_pdi", false),
    (23, "floorswept_ports", false),
    (24, "position_id", false),
    (25, "lock_switch_status", false),
    (32, "gpu_link_conn", false),
    (33, "sys_enable_status", false),
    (34, "opaque_data_version", false),
    (35, "chip_info", true),
    (36, "feature_flag", false),
];

const DRIVER_VERSION: u16 = 3;
const VBIOS_VERSION: u16 = 6;
const FWID: u16 = 20;

impl OpaqueData {
    fn parse(bytes: &[u8]) -> Result<OpaqueData, GpuError> {
        let mut c = Cursor { bytes, at: 0 };
        let mut fields = BTreeMap::new();
        while !c.rest().is_empty() {
            let kind = c.u16("opaque data field type")?;
            let len = usize::from(c.u16("opaque data field size")?);
            let value = c.take(len, "opaque data field")?;
            if fields.insert(kind, value.to_vec()).is_some() {
                return Err(GpuError::malformed("opaque data", format!("field type {kind} appears twice")));
            }
        }
        Ok(OpaqueData { fields })
    }

    /// The driver version, e.g. `550.90.07`.
    pub fn driver_version(&self) -> Option<String> {
        self.fields.get(&DRIVER_VERSION).and_then(|v| text(v))
    }

    /// The VBIOS version as NVIDIA writes it, e.g. `96.00.9f.00.01`: the
    /// first half of the field reversed, then the byte after it.
    pub fn vbios_version(&self) -> Option<String> {
        let v = self.fields.get(&VBIOS_VERSION)?;
        if v.len() < 2 || v.len() % 2 != 0 {
            return None;
        }
        let half = v.len() / 2;
        let mut parts: Vec<String> = v[..half].iter().rev().map(|b| format!("{b:02x}")).collect();
        parts.push(format!("{:02x}", v[half]));
        Some(parts.join("."))
    }

    /// The FWID of the firmware that produced the report, where the driver
    /// includes it.
    pub fn fwid(&self) -> Option<&[u8]> {
        self.fields.get(&FWID).map(Vec::as_slice)
    }

    /// Every field by NVIDIA's name (`type_<n>` for types it has not
    /// named): text fields as text, the VBIOS version formatted, the rest hex.
    pub fn named(&self) -> BTreeMap<String, String> {
        self.fields
            .iter()
            .map(|(kind, value)| {
                let known = OPAQUE_NAMES.iter().find(|(k, _, _)| k == kind);
                let name = known.map_or_else(|| format!("type_{kind}"), |(_, n, _)| (*n).to_owned());
                let shown = match known {
                    Some((VBIOS_VERSION, _, _)) => self.vbios_version(),
                    Some((_, _, true)) => text(value),
                    _ => None,
                };
                (name, shown.unwrap_or_else(|| hex::encode(value)))
            })
            .collect()
    }
}

/// A NUL-padded printable ASCII string, or `None`.
fn text(bytes: &[u8]) -> Option<String> {
    let end = bytes.iter().rposition(|b| *b != 0).map_or(0, |i| i + 1);
    let s = &bytes[..end];
    (s.iter().all(|b| b.is_ascii_graphic() || *b == b' ')).then(|| String::from_utf8_lossy(s).into_owned())
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A report with two measurements and three opaque fields, in NVIDIA's
    /// layout, with a zero signature (parsing does not look at it).
    fn report() -> Vec<u8> {
        let mut r = vec![SPDM_VERSION_1_1, GET_MEASUREMENTS, 0x01, 0xff];
        r.extend([0xaa; 32]);
        r.push(0);
        let mut record = Vec::new();
        for (index, byte) in [(1u8, 0x11u8), (2, 0x22)] {
            record.extend([index, DMTF_SPECIFICATION, 51, 0, 0x01, 48, 0]);
            record.extend([byte; 48]);
        }
        r.extend([SPDM_VERSION_1_1, MEASUREMENTS, 0, 0, 2]);
        r.extend(&(record.len() as u32).to_le_bytes()[..3]);
        r.extend(record);
        r.extend([0xbb; 32]);
        let mut opaque = Vec::new();
        for (kind, value) in [(3u16, &b"550.90.07\0"[..]), (6, &[0x00, 0x9f, 0x00, 0x96, 0x01, 0, 0, 0]), (99, &[7])] {
            opaque.extend(kind.to_le_bytes());
            opaque.extend((value.len() as u16).to_le_bytes());
            opaque.extend(value);
        }
        r.extend((opaque.len() as u16).to_le_bytes());
        r.extend(opaque);
        r.extend([0; SIGNATURE_LEN]);
        r
    }

    #[test]
    fn parses_request_measurements_and_opaque_data() {
        let raw = report();
        let r = parse_report(&raw).unwrap();
        assert_eq!(r.nonce, [0xaa; 32]);
        assert_eq!(r.responder_nonce, [0xbb; 32]);
        assert_eq!(r.measurements.keys().copied().collect::<Vec<_>>(), [1, 2]);
        assert_eq!(r.measurements[&2], [0x22; 48]);
        assert_eq!(r.signed_len, raw.len() - SIGNATURE_LEN);
        assert_eq!(r.opaque.driver_version().as_deref(), Some("550.90.07"));
        assert_eq!(r.opaque.vbios_version().as_deref(), Some("96.00.9f.00.01"));
        assert_eq!(r.opaque.named().get("type_99").map(String::as_str), Some("07"));
    }

    #[test]
    fn every_truncation_is_malformed() {
        let raw = report();
        for len in 0..raw.len() {
            assert!(matches!(parse_report(&raw[..len]), Err(GpuError::Malformed { .. })), "{len}");
        }
    }

    #[test]
    fn refuses_what_nvidia_never_sends() {
        let cases: [(usize, u8, &str); 7] = [
            (0, 0x12, "request SPDMVersion"),
            (1, 0xe1, "request RequestResponseCode"),
            (2, 0x00, "request Param1"),
            (37, 0x10, "response SPDMVersion"),
            (38, 0x61, "response RequestResponseCode"),
            (40, 0x01, "response Param2"),
            // One block fewer than the record holds.
            (41, 0x01, "measurement record"),
        ];
        for (at, value, what) in cases {
            let mut raw = report();
            raw[at] = value;
            let err = parse_report(&raw).unwrap_err();
            assert!(matches!(&err, GpuError::Malformed { what: w, .. } if *w == what), "byte {at}: {err}");
        }
        let mut duplicate = report();
        duplicate[45 + 55] = 1;
        assert!(parse_report(&duplicate).unwrap_err().to_string().contains("index 1 appears twice"));
        let mut trailing = report();
        trailing.extend([0, 0]);
        assert!(parse_report(&trailing).is_err());
        trailing.pop();
        assert!(parse_report(&trailing).is_ok());
    }
}

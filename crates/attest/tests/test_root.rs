//! Policy branches the real vectors cannot reach (a debug TD, a wrong MRTD,
//! an out-of-date TCB, a revoked PCK, old collateral), on TDX quotes and DCAP
//! collateral these tests sign themselves under a test root, as dcap-qvl's
//! sample generator does, through the same verification code with only the
//! root swapped. The PKI is made with the `openssl` command (skipped, with a
//! note, where it is missing).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime};

use dcap_qvl::quote::{
    AuthData, AuthDataV4, CertificationData, Data, EnclaveReport, Header, QEReportCertificationData, Quote, Report,
    TDReport10,
};
use p256::ecdsa::signature::Signer;
use p256::ecdsa::{Signature, SigningKey};
use p256::pkcs8::DecodePrivateKey;
use parity_scale_codec::Encode;
use sealpod_attest::{verify, AttestError, Evidence, Expectation, Kind, Policy, Roots};
use serde_json::json;

/// The Intel SGX extension of a PCK certificate (FMSPC 00906EA10000, PCE id
/// 0000, PCESVN 13), as dcap-qvl's test script writes it.
const PCK_EXTENSION: &str = "DER:308201C1301E060A2A864886F84D010D01010410D04EC06D4E6D92DC90D0AD3CF5EE2DDF30820164060A2A864886F84D010D0102308201543010060B2A864886F84D010D01020102010B3010060B2A864886F84D010D01020202010B3010060B2A864886F84D010D0102030201023010060B2A864886F84D010D0102040201023011060B2A864886F84D010D010205020200FF3010060B2A864886F84D010D0102060201013010060B2A864886F84D010D0102070201003010060B2A864886F84D010D0102080201003010060B2A864886F84D010D0102090201003010060B2A864886F84D010D01020A0201003010060B2A864886F84D010D01020B0201003010060B2A864886F84D010D01020C0201003010060B2A864886F84D010D01020D0201003010060B2A864886F84D010D01020E0201003010060B2A864886F84D010D01020F0201003010060B2A864886F84D010D0102100201003010060B2A864886F84D010D01021102010D301F060B2A864886F84D010D01021204100B0B0202FF01000000000000000000003010060A2A864886F84D010D0103040200003014060A2A864886F84D010D0104040600906EA10000300F060A2A864886F84D010D01050A0100";

/// Root CA → TCB signer (signs TCB info and QE identity); root CA → PCK
/// platform CA → PCK; CRLs for both CAs, and a second PCK CRL revoking the PCK.
fn make_pki(dir: &Path) -> bool {
    if Command::new("openssl").arg("version").output().is_err() {
        eprintln!("skipped: the openssl command is not installed");
        return false;
    }
    let script = format!(
        r#"set -e
cd "{dir}"
key() {{ openssl ecparam -name prime256v1 -genkey -noout | openssl pkcs8 -topk8 -nocrypt -out "$1"; }}
key root.key
openssl req -new -x509 -key root.key -out root.pem -days 3650 -subj "/CN=Test SGX Root CA/O=sealpod tests" \
  -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign"
openssl x509 -in root.pem -outform DER -out root.der
key signer.key
openssl req -new -key signer.key -out signer.csr -subj "/CN=Test TCB Signer/O=sealpod tests"
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n' > signer.ext
openssl x509 -req -in signer.csr -CA root.pem -CAkey root.key -CAcreateserial -out signer.pem -days 3650 -extfile signer.ext
key platform.key
openssl req -new -key platform.key -out platform.csr -subj "/CN=Test PCK Platform CA/O=sealpod tests"
printf 'basicConstraints=critical,CA:TRUE,pathlen:0\nkeyUsage=critical,keyCertSign,cRLSign\n' > platform.ext
openssl x509 -req -in platform.csr -CA root.pem -CAkey root.key -CAcreateserial -out platform.pem -days 3650 -extfile platform.ext
key pck.key
openssl req -new -key pck.key -out pck.csr -subj "/CN=Test PCK Certificate/O=sealpod tests"
printf 'basicConstraints=CA:FALSE\nkeyUsage=digitalSignature\n1.2.840.113741.1.13.1={ext}\n' > pck.ext
openssl x509 -req -in pck.csr -CA platform.pem -CAkey platform.key -CAcreateserial -out pck.pem -days 3650 -extfile pck.ext
ca() {{ printf '[ca]\ndefault_ca=d\n[d]\ndatabase=%s.index\ncrlnumber=%s.crlnum\ndefault_crl_days=3650\ndefault_md=sha256\n' "$1" "$1" > "$1.cnf"; }}
for c in root platform; do ca $c; : > $c.index; echo 01 > $c.crlnum; done
openssl ca -gencrl -config root.cnf -keyfile root.key -cert root.pem -out root.crl.pem 2>/dev/null
openssl crl -in root.crl.pem -outform DER -out root.crl.der
openssl ca -gencrl -config platform.cnf -keyfile platform.key -cert platform.pem -out platform.crl.pem 2>/dev/null
openssl crl -in platform.crl.pem -outform DER -out platform.crl.der
openssl ca -config platform.cnf -keyfile platform.key -cert platform.pem -revoke pck.pem 2>/dev/null
openssl ca -gencrl -config platform.cnf -keyfile platform.key -cert platform.pem -out revoked.crl.pem 2>/dev/null
openssl crl -in revoked.crl.pem -outform DER -out revoked.crl.der
"#,
        dir = dir.display(),
        ext = PCK_EXTENSION
    );
    let out = Command::new("bash").arg("-c").arg(&script).output().unwrap();
    assert!(out.status.success(), "making the test PKI failed: {}", String::from_utf8_lossy(&out.stderr));
    true
}

fn signing_key(dir: &Path, name: &str) -> SigningKey {
    SigningKey::from_pkcs8_pem(&std::fs::read_to_string(dir.join(name)).unwrap()).unwrap()
}

fn sign(key: &SigningKey, data: &[u8]) -> [u8; 64] {
    let sig: Signature = key.sign(data);
    sig.to_bytes().into()
}

fn read(dir: &Path, name: &str) -> String {
    std::fs::read_to_string(dir.join(name)).unwrap()
}

/// What a test changes in the quote and collateral.
#[derive(Clone)]
struct Knobs {
    td_attributes: [u8; 8],
    tcb_status: &'static str,
    tcb_issue: SystemTime,
    revoked_pck: bool,
    report_data: [u8; 64],
}

fn now() -> SystemTime {
    SystemTime::now()
}

impl Default for Knobs {
    fn default() -> Knobs {
        let mut td_attributes = [0u8; 8];
        td_attributes[3] = 0x10; // SEPT_VE_DISABLE, which dcap-qvl requires
        Knobs {
            td_attributes,
            tcb_status: "UpToDate",
            tcb_issue: now() - Duration::from_secs(86_400),
            revoked_pck: false,
            report_data: [0x5a; 64],
        }
    }
}

fn rfc3339(t: SystemTime) -> String {
    let secs = t.duration_since(SystemTime::UNIX_EPOCH).unwrap().as_secs() as i64;
    chrono::DateTime::from_timestamp(secs, 0).unwrap().format("%Y-%m-%dT%H:%M:%SZ").to_string()
}

fn td_report(k: &Knobs) -> TDReport10 {
    TDReport10 {
        tee_tcb_svn: [1; 16],
        mr_seam: [0x01; 48],
        mr_signer_seam: [0x02; 48],
        seam_attributes: [0; 8],
        td_attributes: k.td_attributes,
        xfam: [0xe7, 0x02, 0x06, 0, 0, 0, 0, 0],
        mr_td: [0x03; 48],
        mr_config_id: [0; 48],
        mr_owner: [0; 48],
        mr_owner_config: [0; 48],
        rt_mr0: [0x07; 48],
        rt_mr1: [0x08; 48],
        rt_mr2: [0x09; 48],
        rt_mr3: [0; 48],
        report_data: k.report_data,
    }
}

fn quote(dir: &Path, k: &Knobs) -> Vec<u8> {
    let header = Header {
        version: 4,
        attestation_key_type: 2,
        tee_type: 0x81,
        qe_svn: 1,
        pce_svn: 1,
        qe_vendor_id: dcap_qvl::INTEL_QE_VENDOR_ID,
        user_data: [0; 20],
    };
    let report = td_report(k);
    let attestation_key = SigningKey::from_slice(&[7u8; 32]).unwrap();
    let point = attestation_key.verifying_key().to_encoded_point(false);
    let mut ecdsa_attestation_key = [0u8; 64];
    ecdsa_attestation_key.copy_from_slice(&point.as_bytes()[1..65]);
    let qe_auth_data = vec![0u8; 32];
    use sha2::Digest;
    let qe_hash = sha2::Sha256::new().chain_update(ecdsa_attestation_key).chain_update(&qe_auth_data).finalize();
    let mut qe = EnclaveReport {
        cpu_svn: [1; 16],
        misc_select: 0,
        reserved1: [0; 28],
        attributes: [0; 16],
        mr_enclave: [0; 32],
        reserved2: [0; 32],
        mr_signer: [0; 32],
        reserved3: [0; 96],
        isv_prod_id: 0,
        isv_svn: 0,
        reserved4: [0; 60],
        report_data: [0; 64],
    };
    qe.report_data[..32].copy_from_slice(&qe_hash);
    let qe_report: [u8; 384] = qe.encode().try_into().unwrap();
    let qe_report_signature = sign(&signing_key(dir, "pck.key"), &qe_report);
    let mut signed = header.encode();
    signed.extend(report.encode());
    let ecdsa_signature = sign(&attestation_key, &signed);
    let chain = format!("{}{}{}", read(dir, "pck.pem"), read(dir, "platform.pem"), read(dir, "root.pem"));
    Quote {
        header,
        report: Report::TD10(report),
        auth_data: AuthData::V4(AuthDataV4 {
            ecdsa_signature,
            ecdsa_attestation_key,
            certification_data: CertificationData { cert_type: 5, body: Data::<u32>::new(vec![]) },
            qe_report_data: QEReportCertificationData {
                qe_report,
                qe_report_signature,
                qe_auth_data: Data::<u16>::new(qe_auth_data),
                certification_data: CertificationData { cert_type: 5, body: Data::<u32>::new(chain.into_bytes()) },
            },
        }),
    }
    .encode()
}

fn components() -> serde_json::Value {
    json!((0..16).map(|_| json!({"svn": 0})).collect::<Vec<_>>())
}

fn collateral(dir: &Path, k: &Knobs) -> Vec<u8> {
    let issue = rfc3339(k.tcb_issue);
    let next = rfc3339(k.tcb_issue + Duration::from_secs(30 * 86_400));
    let tcb_info = json!({
        "id": "TDX", "version": 3, "issueDate": issue, "nextUpdate": next,
        "fmspc": "00906EA10000", "pceId": "0000", "tcbType": 0, "tcbEvaluationDataNumber": 12,
        "tdxModule": {"mrsigner": hex::encode([0x02u8; 48]), "attributes": "0000000000000000", "attributesMask": "0000000000000000"},
        "tdxModuleIdentities": [{
            "id": "TDX_01", "mrsigner": hex::encode([0x02u8; 48]),
            "attributes": "0000000000000000", "attributesMask": "0000000000000000",
            "tcbLevels": [{"tcb": {"isvsvn": 1}, "tcbDate": issue, "tcbStatus": "UpToDate", "advisoryIDs": []}]
        }],
        "tcbLevels": [{
            "tcb": {"sgxtcbcomponents": components(), "pcesvn": 0, "tdxtcbcomponents": components()},
            "tcbDate": issue, "tcbStatus": k.tcb_status,
            "advisoryIDs": if k.tcb_status == "UpToDate" { json!([]) } else { json!(["INTEL-SA-99999"]) }
        }]
    })
    .to_string();
    let qe_identity = json!({
        "id": "TD_QE", "version": 2, "issueDate": issue, "nextUpdate": next, "tcbEvaluationDataNumber": 12,
        "miscselect": "00000000", "miscselectMask": "FFFFFFFF",
        "attributes": "00000000000000000000000000000000", "attributesMask": "00000000000000000000000000000000",
        "mrsigner": "00".repeat(32), "isvprodid": 0,
        "tcbLevels": [{"tcb": {"isvsvn": 0}, "tcbDate": issue, "tcbStatus": "UpToDate", "advisoryIDs": []}]
    })
    .to_string();
    let signer = signing_key(dir, "signer.key");
    let signer_chain = format!("{}{}", read(dir, "signer.pem"), read(dir, "root.pem"));
    let crl = if k.revoked_pck { "revoked.crl.der" } else { "platform.crl.der" };
    json!({
        "pck_crl_issuer_chain": format!("{}{}", read(dir, "platform.pem"), read(dir, "root.pem")),
        "root_ca_crl": hex::encode(std::fs::read(dir.join("root.crl.der")).unwrap()),
        "pck_crl": hex::encode(std::fs::read(dir.join(crl)).unwrap()),
        "tcb_info_issuer_chain": signer_chain,
        "tcb_info_signature": hex::encode(sign(&signer, tcb_info.as_bytes())),
        "tcb_info": tcb_info,
        "qe_identity_issuer_chain": signer_chain,
        "qe_identity_signature": hex::encode(sign(&signer, qe_identity.as_bytes())),
        "qe_identity": qe_identity,
    })
    .to_string()
    .into_bytes()
}

struct Pki {
    _tmp: tempfile::TempDir,
    dir: PathBuf,
    roots: Roots,
}

fn pki() -> Option<Pki> {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_owned();
    if !make_pki(&dir) {
        return None;
    }
    let roots = Roots { intel_root_der: std::fs::read(dir.join("root.der")).unwrap() };
    Some(Pki { _tmp: tmp, dir, roots })
}

fn check(p: &Pki, k: &Knobs, policy: &Policy) -> Result<sealpod_attest::Claims, AttestError> {
    let evidence = Evidence { kind: Kind::Tdx, report: quote(&p.dir, k), collateral: vec![collateral(&p.dir, k)] };
    let expect = Expectation {
        report_data: Some(&k.report_data),
        provider_public_key: None,
        now: now(),
        allow_insecure_dev: false,
    };
    verify(&evidence, &expect, policy, &p.roots)
}

#[test]
fn a_quote_signed_under_the_test_root_verifies_there_and_nowhere_else() {
    let Some(p) = pki() else { return };
    let k = Knobs::default();
    let claims = check(&p, &k, &Policy::default()).unwrap();
    let json = serde_json::to_value(&claims).unwrap();
    assert_eq!(json["mr_td"], hex::encode([0x03u8; 48]));
    assert_eq!(json["tcb_status"], "UpToDate");
    // The same evidence under Intel's pinned root: refused.
    let evidence = Evidence { kind: Kind::Tdx, report: quote(&p.dir, &k), collateral: vec![collateral(&p.dir, &k)] };
    let expect = Expectation { report_data: None, provider_public_key: None, now: now(), allow_insecure_dev: false };
    assert!(matches!(verify(&evidence, &expect, &Policy::default(), &Roots::pinned()), Err(AttestError::Signature(_))));
}

#[test]
fn a_debug_td_is_refused_unless_the_policy_allows_debug() {
    let Some(p) = pki() else { return };
    let mut k = Knobs::default();
    k.td_attributes[0] = 0x01;
    let err = check(&p, &k, &Policy::default()).unwrap_err().to_string();
    assert!(err.contains("allow_debug"), "{err}");
    let policy = Policy { allow_debug: true, ..Policy::default() };
    assert!(check(&p, &k, &policy).unwrap().notes.iter().all(|n| !n.contains("allow_debug")));
}

#[test]
fn a_wrong_mr_td_is_refused_naming_both_values() {
    let Some(p) = pki() else { return };
    let mut policy = Policy::default();
    policy.tdx.mr_td = vec!["ab".repeat(48)];
    let err = check(&p, &Knobs::default(), &policy).unwrap_err().to_string();
    assert!(err.contains("tdx.mr_td") && err.contains(&"03".repeat(48)) && err.contains(&"ab".repeat(48)), "{err}");
    policy.tdx.mr_td.push("03".repeat(48));
    check(&p, &Knobs::default(), &policy).unwrap();
}

#[test]
fn an_out_of_date_tcb_is_refused_unless_listed() {
    let Some(p) = pki() else { return };
    let k = Knobs { tcb_status: "OutOfDate", ..Knobs::default() };
    let err = check(&p, &k, &Policy::default()).unwrap_err().to_string();
    assert!(err.contains("tdx.accepted_tcb_status") && err.contains("OutOfDate"), "{err}");
    let mut policy = Policy::default();
    policy.tdx.dcap.accepted_tcb_status.push("OutOfDate".into());
    let claims = check(&p, &k, &policy).unwrap();
    assert!(claims.notes.iter().any(|n| n.contains("OutOfDate")), "{:?}", claims.notes);
    policy.tdx.dcap.rejected_advisories.push("INTEL-SA-99999".into());
    assert!(check(&p, &k, &policy).unwrap_err().to_string().contains("tdx.rejected_advisories"));
}

#[test]
fn a_revoked_pck_is_refused() {
    let Some(p) = pki() else { return };
    let k = Knobs { revoked_pck: true, ..Knobs::default() };
    let err = check(&p, &k, &Policy::default()).unwrap_err();
    assert!(matches!(err, AttestError::Signature(_)), "{err}");
    assert!(err.to_string().to_lowercase().contains("revoked"), "{err}");
}

#[test]
fn old_collateral_is_refused_by_age_and_a_low_evaluation_number() {
    let Some(p) = pki() else { return };
    let k = Knobs { tcb_issue: now() - Duration::from_secs(20 * 86_400), ..Knobs::default() };
    check(&p, &k, &Policy::default()).unwrap();
    let mut policy = Policy::default();
    policy.tdx.dcap.max_collateral_age_days = 7;
    let err = check(&p, &k, &policy).unwrap_err().to_string();
    assert!(err.contains("tdx.max_collateral_age_days"), "{err}");
    let mut policy = Policy::default();
    policy.tdx.dcap.min_tcb_eval_data_number = 13;
    let err = check(&p, &Knobs::default(), &policy).unwrap_err().to_string();
    assert!(err.contains("tdx.min_tcb_eval_data_number") && err.contains("12"), "{err}");
    // Past its next update the collateral is expired whatever the policy says.
    let k = Knobs { tcb_issue: now() - Duration::from_secs(31 * 86_400), ..Knobs::default() };
    assert!(matches!(check(&p, &k, &Policy::default()), Err(AttestError::Signature(_))));
}

#[test]
fn evidence_for_other_report_data_is_a_binding_error() {
    let Some(p) = pki() else { return };
    let k = Knobs::default();
    let evidence = Evidence { kind: Kind::Tdx, report: quote(&p.dir, &k), collateral: vec![collateral(&p.dir, &k)] };
    let other = [0u8; 64];
    let expect =
        Expectation { report_data: Some(&other), provider_public_key: None, now: now(), allow_insecure_dev: false };
    assert!(matches!(verify(&evidence, &expect, &Policy::default(), &p.roots), Err(AttestError::Binding { .. })));
}

use super::*;

#[test]
fn defaults_are_valid() {
    assert_eq!(SimConfig::new().validate(), Ok(()));
}

#[test]
fn invalid_settings_are_typed_errors() {
    let field = |c: SimConfig| c.validate().expect_err("invalid").field;
    let c = SimConfig::new().with_time_scale(0.0);
    assert_eq!(
        c.validate(),
        Err(InvalidConfig::new(
            "time_scale",
            "must be finite and > 0, got 0"
        ))
    );
    assert_eq!(
        field(SimConfig::new().with_time_scale(f64::NAN)),
        "time_scale"
    );
    let c = SimConfig::new().with_model_limits("m", Limits::new(0, 1, 1));
    assert_eq!(
        c.validate(),
        Err(InvalidConfig::new(
            "model_limits",
            "limits for model m must all be > 0"
        ))
    );
    let c = SimConfig::new().with_faults(Faults::none().with_overloaded(1.5));
    assert_eq!(field(c), "faults.overloaded");
    let c =
        SimConfig::new().with_faults(Faults::none().with_overloaded(0.6).with_server_error(0.6));
    assert_eq!(field(c), "faults");
    assert_eq!(
        field(SimConfig::new().with_output_tokens(10, 5)),
        "output_tokens"
    );
    let c = SimConfig::new().with_max_keys(0);
    assert_eq!(
        c.validate(),
        Err(InvalidConfig::new("max_keys", "must be > 0"))
    );
}

#[test]
fn debug_redacts_api_keys() {
    let c = SimConfig::new().with_api_keys(["sk-secret-123"]);
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("sk-secret"), "{dbg}");
}

#[test]
fn window_defaults_to_a_scaled_minute() {
    let c = SimConfig::new().with_time_scale(60.0);
    assert_eq!(c.window(), Duration::from_secs(1));
}

#[test]
fn stalled_bodies_share_the_body_fault_budget() {
    let field = |f: Faults| {
        SimConfig::new()
            .with_faults(f)
            .validate()
            .map_err(|e| e.field)
    };
    assert_eq!(field(Faults::none().with_stalled_body(1.0)), Ok(()));
    assert_eq!(field(Faults::none().with_latency_spike(1.0)), Ok(()));
    let both = Faults::none()
        .with_truncate_stream(0.5)
        .with_stalled_body(0.6);
    assert_eq!(field(both), Err("faults"));
    assert_eq!(
        field(Faults::none().with_stalled_body(-0.1)),
        Err("faults.stalled_body")
    );
    assert_eq!(
        field(Faults::none().with_latency_spike(f64::NAN)),
        Err("faults.latency_spike")
    );
    // A latency spike combines with every other fault.
    let all = Faults::none()
        .with_rate_limited(1.0)
        .with_stalled_body(1.0)
        .with_latency_spike(1.0);
    assert_eq!(field(all), Ok(()));
}

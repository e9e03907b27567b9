use super::*;

#[test]
fn defaults_are_valid() {
    assert_eq!(SimConfig::new().validate(), Ok(()));
}

#[test]
fn invalid_settings_are_typed_errors() {
    let c = SimConfig::new().with_time_scale(0.0);
    assert_eq!(c.validate(), Err(ConfigError::InvalidTimeScale(0.0)));
    let c = SimConfig::new().with_time_scale(f64::NAN);
    assert!(matches!(
        c.validate(),
        Err(ConfigError::InvalidTimeScale(_))
    ));
    let c = SimConfig::new().with_model_limits("m", Limits::new(0, 1, 1));
    assert_eq!(
        c.validate(),
        Err(ConfigError::ZeroLimit {
            model: Some("m".into())
        })
    );
    let c = SimConfig::new().with_faults(Faults::none().with_overloaded(1.5));
    assert!(matches!(c.validate(), Err(ConfigError::InvalidRate { .. })));
    let c =
        SimConfig::new().with_faults(Faults::none().with_overloaded(0.6).with_server_error(0.6));
    assert!(matches!(c.validate(), Err(ConfigError::InvalidRate { .. })));
    let c = SimConfig::new().with_output_tokens(10, 5);
    assert!(matches!(
        c.validate(),
        Err(ConfigError::InvalidOutputRange { .. })
    ));
    let c = SimConfig::new().with_max_keys(0);
    assert_eq!(c.validate(), Err(ConfigError::Zero("max_keys")));
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

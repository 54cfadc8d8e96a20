//! Where the outer optimizer's tensors live: CPU, or CUDA when asked for and present.

pub use crate::config::Device as DeviceChoice;

/// Asking for CUDA on a machine without a usable GPU.
#[derive(Debug, thiserror::Error)]
#[error(
    "device cuda was requested but libtorch sees no CUDA device (cuda available: false); \
     use device auto or cpu, or run on a GPU node"
)]
pub struct CudaUnavailable;

/// Resolves the configured choice against what libtorch can actually use.
pub fn resolve_device(choice: DeviceChoice) -> Result<tch::Device, CudaUnavailable> {
    let cuda = tch::Cuda::is_available();
    match choice {
        DeviceChoice::Cpu => Ok(tch::Device::Cpu),
        DeviceChoice::Auto if cuda => Ok(tch::Device::Cuda(0)),
        DeviceChoice::Auto => Ok(tch::Device::Cpu),
        DeviceChoice::Cuda if cuda => Ok(tch::Device::Cuda(0)),
        DeviceChoice::Cuda => Err(CudaUnavailable),
    }
}

/// One line for the start-up log: the device in use and what libtorch found.
pub fn describe(device: tch::Device) -> String {
    format!(
        "device={} cuda_available={} cuda_devices={}",
        match device {
            tch::Device::Cuda(index) => format!("cuda:{index}"),
            _ => "cpu".to_string(),
        },
        tch::Cuda::is_available(),
        tch::Cuda::device_count()
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_always_available_and_auto_follows_cuda() {
        assert_eq!(resolve_device(DeviceChoice::Cpu).unwrap(), tch::Device::Cpu);
        let expected = if tch::Cuda::is_available() {
            tch::Device::Cuda(0)
        } else {
            tch::Device::Cpu
        };
        assert_eq!(resolve_device(DeviceChoice::Auto).unwrap(), expected);
        assert_eq!(
            resolve_device(DeviceChoice::Cuda).is_ok(),
            tch::Cuda::is_available()
        );
    }
}

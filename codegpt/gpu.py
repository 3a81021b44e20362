"""The GPU's facts for train.py's log and the benchmarks: the bf16 dense peak of common cards (for MFU), and the energy counter."""
import torch

# bf16 dense tensor-core peak (TFLOP/s) of common cards, by a substring of torch's device name;
# first match wins, so the more specific names come first. Override with the peak_tflops config key.
PEAK_BF16_TFLOPS = [
    ('H100 PCIe', 756.0), ('H100 NVL', 835.0), ('H100', 989.0), ('H200', 989.0), ('GH200', 989.0),
    ('B200', 2250.0), ('A100', 312.0), ('A800', 312.0), ('L40S', 362.0), ('L40', 181.0), ('L4', 121.0),
    ('A10G', 70.0), ('A10', 125.0), ('A6000', 155.0), ('RTX 4090', 165.0), ('RTX 4080', 97.0),
    ('RTX 4070', 58.0), ('RTX 3090', 71.0), ('RTX 3080', 60.0),
]


def peak_flops(device_type, override_tflops=None):
    """The bf16 peak of the card in use in FLOP/s, or None when unknown (then MFU is not reported)."""
    if override_tflops:
        return override_tflops * 1e12
    if device_type != 'cuda' or not torch.cuda.is_available():
        return None
    name = torch.cuda.get_device_name()
    for key, tflops in PEAK_BF16_TFLOPS:
        if key in name:
            return tflops * 1e12
    return None


def energy_joules(device_type):
    """Energy this GPU has used since the driver loaded, from NVML; None where unavailable."""
    if device_type != 'cuda':
        return None
    try:
        import pynvml
        pynvml.nvmlInit()
        # NVML counts devices in PCI order; assumes CUDA_VISIBLE_DEVICES does not reorder them
        h = pynvml.nvmlDeviceGetHandleByIndex(torch.cuda.current_device())
        return pynvml.nvmlDeviceGetTotalEnergyConsumption(h) / 1000.0  # mJ -> J
    except Exception:
        return None

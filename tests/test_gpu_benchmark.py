"""benchmarks/gpu.py --tiny: the GPU script's whole path (build from config, pxpo's sampler and
Policy.update in LoRA and full modes, FLOP counting, the report) on a small config on the CPU."""

import importlib.util
import json
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "gpu.py"


def load_script():
    spec = importlib.util.spec_from_file_location("gpu_bench", SCRIPT)
    gpu = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(gpu)
    return gpu


def run_script(gpu, *argv):
    threads = torch.get_num_threads()
    try:
        assert gpu.main(list(argv)) == 0
    finally:
        torch.set_num_threads(threads)


@pytest.mark.slow
@pytest.mark.parametrize("family", ["sd15", "sdxl", "sd35", "flux"])
def test_gpu_script_tiny_reports_throughput_and_flops(family, tmp_path, capsys):
    gpu = load_script()
    run_script(gpu, "--tiny", f"--family={family}", f"--json={tmp_path / 'gpu.json'}")
    result = json.loads((tmp_path / "gpu.json").read_text())
    rows = {r["mode"]: r for r in result["modes"]}
    assert set(rows) == {"lora", "full"} and result["config"] == "tiny" and result["family"] == family
    assert 0 < rows["lora"]["trainable_params"] < rows["full"]["trainable_params"]
    for r in rows.values():
        assert r["sample_per_s"] > 0 and r["train_per_s"] > 0 and r["epoch_per_s"] < r["sample_per_s"]
        # a backward costs more than nothing: forward + backward FLOPs exceed the forward's
        assert r["unet_forward_backward_flops"] > r["unet_forward_flops"] > 0
    # LoRA's backward skips the frozen weights' gradients: fewer FLOPs than full fine-tuning's
    assert rows["lora"]["unet_forward_backward_flops"] < rows["full"]["unet_forward_backward_flops"]
    assert "| lora |" in capsys.readouterr().out


@pytest.mark.slow
def test_saved_pipeline_is_the_family_plain_diffusers_loads(tmp_path):
    """--save writes the random pipeline in diffusers' layout (what `pxpo train --model.name=DIR` loads)."""
    from diffusers import DiffusionPipeline

    gpu = load_script()
    for family, cls in (("sd15", "StableDiffusionPipeline"), ("sdxl", "StableDiffusionXLPipeline")):
        run_script(gpu, "--tiny", f"--family={family}", f"--save={tmp_path / family}", "--modes=")
        pipe = DiffusionPipeline.from_pretrained(tmp_path / family)
        assert type(pipe).__name__ == cls and type(pipe.scheduler).__name__ == "DDIMScheduler"
    assert pipe.unet.config.addition_embed_type == "text_time"  # SDXL's added conditioning


def test_peak_table_matches_card_names():
    gpu = load_script()
    peak = dict(gpu.PEAK_BF16_FLOPS)
    find = lambda name: next((p for k, p in gpu.PEAK_BF16_FLOPS if k in name), None)  # noqa: E731
    assert find("NVIDIA H100 80GB HBM3") == peak["H100"] == 989.4e12
    assert find("NVIDIA H100 PCIe") == 756e12
    assert find("NVIDIA H200") == 989.4e12 and find("NVIDIA A100-SXM4-80GB") == 312e12
    assert find("Tesla T4") is None

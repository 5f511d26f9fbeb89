"""LoRA serving against published figures (Punica, S-LoRA). Each test states the figure,
fleetsim's prediction and what is off; the tolerances are honest, not tight."""

from __future__ import annotations

import numpy as np
from fleetsim.workloads.requests import RequestStream

from fleetsim.serving import Deployment, EngineConfig, LoraConfig, PoolDeployment, simulate_serving

MODEL = "llama-3.1-8b"  # the catalog's nearest to the papers' Llama-2-7B / Llama-7B (hidden 4096, 32 layers)


def _dep(lora: LoraConfig | None) -> Deployment:
    return Deployment(pools=(PoolDeployment(replicas=1, engine=EngineConfig(lora=lora)),))


def _batch(n: int, adapters: bool) -> RequestStream:
    cols = {"arrival_s": np.zeros(n), "prompt_tokens": np.full(n, 128), "output_tokens": np.full(n, 128)}
    if adapters:
        cols |= {"adapter_id": np.arange(n), "lora_rank": np.full(n, 16)}
    return RequestStream(**cols)


def test_punica_added_latency_per_token() -> None:
    """Punica (Chen et al., arXiv 2310.18547, abstract and Sec. 7, Figs. 11-12): SGMV adds
    about 2 ms per token for 7B models on an A100 with distinct adapters in the batch.
    fleetsim, a batch of 32 requests of 32 distinct rank-16 adapters on an A100-SXM-80GB,
    fused kernel priced by the roofline: +1.19 ms per token (TPOT 11.8 -> 13.0 ms), 40 %
    under: the roofline has no kernel launches (2 per application x 224 applications)
    and reads the A/B matrices at full efficiency. Tolerance: a factor of 2."""
    base = simulate_serving(MODEL, "1xA100-SXM-80GB", _batch(32, False), _dep(None))
    lora = simulate_serving(MODEL, "1xA100-SXM-80GB", _batch(32, True),
                            _dep(LoraConfig(max_loras=32, kernel="roofline")))
    added = lora.summary["tpot_p50_s"] - base.summary["tpot_p50_s"]
    assert 1e-3 < added < 4e-3, added
    # The measured plain-torch grouped kernel on the H200 (lora.csv) costs far more than a
    # fused kernel: +14 ms per token for the same batch (224 x ~64 us), 7x Punica's figure.
    h_base = simulate_serving(MODEL, "1xH200-SXM", _batch(32, False), _dep(None))
    h_lora = simulate_serving(MODEL, "1xH200-SXM", _batch(32, True), _dep(LoraConfig(max_loras=32)))
    assert h_lora.summary["tpot_p50_s"] - h_base.summary["tpot_p50_s"] > 5 * added


def test_slora_thousands_of_adapters_small_overhead() -> None:
    """S-LoRA (Sheng et al., arXiv 2311.03285, abstract; setting S1 of its README/Table 1:
    Llama-7B, rank 8; A100-80GB): thousands of adapters (up to 2,000) served on one GPU
    with a small overhead against a few adapters. fleetsim, unified paging, fused kernel
    (roofline), Zipf(1.0) popularity, an overloaded Poisson stream of 300 requests:
    throughput drops by 6.3 % from 5 to 2,000 adapters (17.3 -> 16.2 req/s; hit rate 0.98
    -> 0.46, loads stalling 0.56 s; at 1,500 requests 19.7 -> 18.4 req/s, -6.5 %). The
    paper's own figure is not reproduced number for number (its trace and GPU differ);
    the claim checked is the small overhead. Tolerance: the drop stays under 20 %."""
    thr = {}
    for n in (5, 2000):
        wl = f"poisson:rate=40,isl=uniform(8,512),osl=uniform(8,512),adapters={n},adapter_zipf=1.0,lora_rank=8"
        r = simulate_serving(MODEL, "1xA100-SXM-80GB", wl,
                             _dep(LoraConfig(max_loras=256, memory="unified", kernel="roofline")), num_requests=300)
        thr[n] = r.summary["requests_per_s"]
        assert r.summary["finished"] == 300
    assert 0.8 < thr[2000] / thr[5] <= 1.0, thr

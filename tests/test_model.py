"""The URM model: fusion, slots and query tokens, set-out scoring, CTR, persistence."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from recllm.config import ModelConfig
from recllm.model.batching import Collator
from recllm.model.inference import Scorer
from recllm.model.tokens import ITEM_SLOT, LM_TOKEN, QUERY_TOKEN, neutralize
from recllm.model import urm as urm_module
from recllm.model.urm import URM, ItemCatalog, LossTargets
from tests.helpers import N_ITEMS, tiny_catalog, tiny_model

PROMPTS = [
    "Recommend items this user will click next. History: clicked <|item|> bought <|item|>",
    "Recommend items this user will click next. History: liked <|item|>",
    "Recommend items this user will click next. History:",
]
HISTORIES = [[1, 2], [5], []]


def batch_of(model, tokenizer, prompts=PROMPTS, histories=HISTORIES):
    collator = Collator(tokenizer, model.config)
    return collator(collator.tokenize(prompts), histories)


def test_fusion_gives_one_hidden_sized_vector_per_item_and_cold_items_use_text_and_image_only(tokenizer):
    model = tiny_model(tokenizer).eval()
    catalog = tiny_catalog()
    out = model.fusion(torch.arange(N_ITEMS), catalog)
    assert out.shape == (N_ITEMS, 32)
    cold = torch.tensor([N_ITEMS - 1])  # index >= n_items_trained: never trained, no ID vector
    with torch.no_grad():
        model.fusion.id_embedding.weight.add_(1.0)
    assert torch.allclose(model.fusion(cold, catalog), out[cold])
    warm = torch.tensor([1])
    assert not torch.allclose(model.fusion(warm, catalog), out[warm])


def test_a_missing_image_contributes_nothing(tokenizer):
    model = tiny_model(tokenizer).eval()
    catalog = tiny_catalog()
    no_image = torch.tensor([0, 3])  # has_image False
    before = model.fusion(no_image, catalog)
    catalog.image[no_image] = 100.0
    assert torch.allclose(model.fusion(no_image, catalog), before)


def test_slots_hold_history_items_and_query_tokens_close_each_row(tokenizer):
    model = tiny_model(tokenizer)
    batch = batch_of(model, tokenizer)
    slot = model.config.item_slot_id
    assert batch.slot_items.tolist() == [1, 2, 5]
    assert all(batch.input_ids[r, c] == slot for r, c in zip(batch.slot_rows, batch.slot_cols))
    for row in range(3):
        length = int(batch.attention_mask[row].sum())
        assert batch.query_cols[row].tolist() == list(range(length - 3, length))
        assert (batch.input_ids[row, length - 3:length] == model.config.query_token_id).all()


def test_the_lone_space_before_a_slot_is_not_a_token_but_every_word_still_is(tokenizer):
    collator = Collator(tokenizer, tiny_model(tokenizer).config)
    plain = tokenizer(PROMPTS[0], add_special_tokens=False)["input_ids"]
    tokens = collator.tokenize([PROMPTS[0]])[0]
    assert len(tokens) == len(plain) - 2  # one blank token before each of the two slots
    assert tokenizer.decode(tokens).split() == PROMPTS[0].replace(" <|item|>", "<|item|>").split()


def test_a_prompt_over_budget_drops_its_oldest_events_keeping_slots_aligned(tokenizer):
    model = tiny_model(tokenizer)
    model.config.max_tokens = 24
    long_prompt = "History: " + " ".join(["clicked <|item|>"] * 10)
    batch = batch_of(model, tokenizer, [long_prompt], [list(range(10))])
    assert batch.input_ids.shape[1] == 24
    kept = batch.slot_items.tolist()
    assert kept == list(range(10 - len(kept), 10)) and 0 < len(kept) < 10


def test_set_out_top_k_equals_brute_force_scoring_of_every_item(tokenizer):
    model = tiny_model(tokenizer).eval()
    catalog = tiny_catalog()
    with torch.no_grad():
        users, _ = model.encode(batch_of(model, tokenizer), catalog)
        scores = model.scores(users, model.item_vectors(catalog))
        top = scores.topk(5, dim=1).indices
        scale = model.log_scale.exp()
        for b in range(users.shape[0]):
            brute = []
            for i in range(N_ITEMS):
                w = model.item_vectors(catalog, torch.tensor([i]))[0]
                brute.append(max(float(scale * (users[b, m] @ w)) for m in range(users.shape[1])))
            assert np.allclose(scores[b].numpy(), brute, atol=1e-5)
            assert top[b].tolist() == list(np.argsort(-np.array(brute), kind="stable")[:5])


def test_padding_never_changes_a_rows_result_and_no_score_is_nan(tokenizer):
    model = tiny_model(tokenizer).eval()
    catalog = tiny_catalog()
    with torch.no_grad():
        together, _ = model.encode(batch_of(model, tokenizer), catalog)
        alone, _ = model.encode(batch_of(model, tokenizer, PROMPTS[2:], HISTORIES[2:]), catalog)
    assert torch.allclose(together[2], alone[0], atol=1e-5)
    assert not torch.isnan(together).any()


MIXED_PROMPTS = [  # two objectives' instructions, rows of different lengths, one row sharing nothing
    "Recommend items this user will click next. History: clicked <|item|> bought <|item|>",
    "Recommend items this user will buy next. History: liked <|item|>",
    "Recommend items this user will click next. History: liked <|item|>",
    "Recommend items this user will buy next. History:",
    "Something else entirely. History: clicked <|item|>",
]
MIXED_HISTORIES = [[1, 2], [5], [7], [], [3]]


def test_rows_sharing_a_start_are_grouped_by_it_and_no_start_runs_past_an_item_slot(tokenizer):
    model = tiny_model(tokenizer)
    batch = batch_of(model, tokenizer, MIXED_PROMPTS, MIXED_HISTORIES)
    groups = urm_module.shared_starts(batch.input_ids, batch.attention_mask, model._stop_tokens())
    assert sorted(sorted(rows) for rows, _ in groups) == [[0, 2], [1, 3]]  # row 4 shares too little
    for rows, length in groups:
        assert length >= urm_module.MIN_SHARED_PREFIX
        assert (batch.input_ids[rows, :length] == batch.input_ids[rows[0], :length]).all()
        assert (batch.slot_cols[torch.isin(batch.slot_rows, torch.tensor(rows))] >= length).all()
    one = batch_of(model, tokenizer, ["History: clicked <|item|> x", "History: clicked <|item|> y"], [[1], [2]])
    assert urm_module.shared_starts(one.input_ids, one.attention_mask, model._stop_tokens()) == [
        ([0, 1], int(one.slot_cols[0]))]


def test_shared_starts_run_once_with_the_states_and_gradients_of_running_every_row_whole(tokenizer, monkeypatch):
    model = tiny_model(tokenizer, ctr_history=True, ctr_text_history=True).train()
    catalog = tiny_catalog()
    batch = batch_of(model, tokenizer, MIXED_PROMPTS, MIXED_HISTORIES)
    targets = LossTargets(items=torch.tensor([3, 6, 9, 2, 4]),
                          labels=torch.tensor([float("nan"), float("nan"), 1.0, float("nan"), 0.0]))
    params = [p for p in model.parameters() if p.requires_grad]

    def loss_hidden_and_grads():
        users, hidden, slots = model.encode_with_slots(batch, catalog)
        loss, _ = model.joint_loss(users, hidden, batch, catalog, targets, slots)
        return loss, hidden, torch.autograd.grad(loss, params, allow_unused=True)

    once = loss_hidden_and_grads()
    monkeypatch.setattr(urm_module, "MIN_SHARED_PREFIX", 10**6)  # every row run whole
    whole = loss_hidden_and_grads()
    real = batch.attention_mask.bool()
    assert torch.allclose(once[0], whole[0], atol=1e-5)
    assert torch.allclose(once[1][real], whole[1][real], atol=1e-5)
    for a, b in zip(once[2], whole[2]):
        assert (a is None) == (b is None) and (a is None or torch.allclose(a, b, atol=1e-4, rtol=1e-3))


def test_click_probabilities_are_probabilities(tokenizer):
    model = tiny_model(tokenizer).eval()
    catalog = tiny_catalog()
    with torch.no_grad():
        users, _ = model.encode(batch_of(model, tokenizer), catalog)
        p = model.click_probability(users, model.item_vectors(catalog, torch.tensor([0, 4, 7])))
    assert p.shape == (3,) and ((p > 0) & (p < 1)).all()


def test_with_ctr_history_the_item_nearer_the_history_is_likelier_clicked(tokenizer):
    model = tiny_model(tokenizer, ctr_history=True).eval()
    catalog = tiny_catalog()
    with torch.no_grad():
        items = model.item_vectors(catalog)
        history = URM.history_vectors(items[[1, 1, 2]], torch.tensor([0, 0, 1]), 3)  # rows: [1, 1], [2], none
        users = torch.nn.functional.normalize(torch.ones(2, 3, items.shape[1]), dim=-1)  # one user vector for both
        near, far = model.click_probability(users, items[[1, 1]], history[[0, 2]])
        with pytest.raises(ValueError, match="reads the history"):
            model.click_probability(users, items[[1, 1]])
    assert torch.allclose(history[0], items[1]) and torch.allclose(history[1], items[2]) and (history[2] == 0).all()
    assert near > far


def test_with_ctr_text_history_the_item_whose_text_resembles_the_historys_is_likelier_clicked(tokenizer):
    model = tiny_model(tokenizer, ctr_text_history=True).eval()
    catalog = tiny_catalog()
    catalog.text[3] = 2.0 * catalog.text[1] + 0.1 * catalog.text[3]  # item 3's text all but repeats item 1's
    unit = torch.nn.functional.normalize(catalog.text, dim=-1)
    # rows: history [1, 2] shown 3; history [1, 2] shown 4; history [] shown 3
    affinity = URM.text_affinity(catalog, torch.tensor([1, 2, 1, 2]), torch.tensor([0, 0, 1, 1]), torch.tensor([3, 4, 3]))
    expected = [float((unit[[1, 2]] @ unit[i]).mean()) for i in (3, 4)] + [0.0]
    assert torch.allclose(affinity, torch.tensor(expected), atol=1e-6) and affinity[0] > 0.4 > abs(affinity[1])
    with torch.no_grad():
        items = model.item_vectors(catalog)
        users = torch.nn.functional.normalize(torch.ones(2, 3, items.shape[1]), dim=-1)  # one user vector for both
        near, far = model.click_probability(users, items[[3, 3]], text_affinity=affinity[[0, 1]])
        with pytest.raises(ValueError, match="reads the history's texts"):
            model.click_probability(users, items[[3, 3]])
    assert near > far  # the same item and user: only the history's text differs


def test_the_text_term_learns_on_top_of_the_vector_click_head_and_leaves_the_vectors_learning_as_without_it(tokenizer):
    from recllm.training.loop import adamw, clip_each_group

    with_text = tiny_model(tokenizer, ctr_history=True, ctr_text_history=True).train()
    without = tiny_model(tokenizer, ctr_history=True).train()
    without.load_state_dict(with_text.state_dict(), strict=False)  # the same weights, the text head aside
    catalog = tiny_catalog()
    batch = batch_of(with_text, tokenizer, MIXED_PROMPTS, MIXED_HISTORIES)
    targets = LossTargets(items=torch.tensor([3, 6, 9, 2, 4]),
                          labels=torch.tensor([float("nan"), 1.0, 1.0, float("nan"), 0.0]))

    def grads(model):
        """The loss parts, and each parameter's gradient as computed and as the training loop clips it."""
        torch.manual_seed(1)  # the same dropout draws in both
        users, hidden, slots = model.encode_with_slots(batch, catalog)
        loss, parts = model.joint_loss(users, hidden, batch, catalog, targets, slots)
        loss.backward()
        named = {n: p for n, p in model.named_parameters() if p.requires_grad}
        raw = {n: None if p.grad is None else p.grad.clone() for n, p in named.items()}
        for p in model.text_head_parameters():
            p.grad *= 1e4  # however large the stack's gradient, the vectors' clipped steps stay the same
        clip_each_group(adamw(model, 1e-3, 0.01), 1.0)
        return parts, raw, {n: p.grad for n, p in named.items()}

    (text_parts, text_raw, text_clipped), (plain_parts, plain_raw, plain_clipped) = grads(with_text), grads(without)
    head = {"ctr_text_weight", "ctr_vector_weight", "ctr_text_bias"}
    assert set(text_raw) - set(plain_raw) == head and set(text_parts) == set(plain_parts) | {"ctr_text"}
    assert text_parts["ctr"] == pytest.approx(plain_parts["ctr"])
    for computed, plain in ((text_raw, plain_raw), (text_clipped, plain_clipped)):
        for name, g in plain.items():
            assert (g is None) == (computed[name] is None)
            assert g is None or torch.allclose(g, computed[name], atol=1e-6, rtol=1e-4), name
    assert all(text_raw[name].abs() > 0 for name in head)
    assert not torch.allclose(plain_clipped["query_tokens"], plain_raw["query_tokens"])  # the clip did bite


def test_the_optimizer_trains_the_text_stack_at_its_own_rate_and_without_decay(tokenizer):
    from recllm.training.loop import adamw

    model = tiny_model(tokenizer, ctr_text_history=True)
    rest, head = adamw(model, 1e-3, 0.01).param_groups
    assert len(head["params"]) == 3 and all(a is b for a, b in zip(head["params"], model.text_head_parameters()))
    assert head["lr"] == pytest.approx(1e-3 * urm_module.TEXT_HEAD_LR_SCALE) and head["weight_decay"] == 0.0
    assert (rest["lr"], rest["weight_decay"]) == (1e-3, 0.01) and len(rest["params"]) + 3 == len(list(model.parameters()))
    assert len(adamw(tiny_model(tokenizer), 1e-3, 0.01).param_groups) == 1


def test_the_item_prior_starts_at_zero_and_moves_an_items_scores_alike_for_every_user(tokenizer, tmp_path):
    plain, model = tiny_model(tokenizer).eval(), tiny_model(tokenizer, item_prior=True).eval()
    catalog = tiny_catalog()
    with torch.no_grad():
        users, _ = model.encode(batch_of(model, tokenizer), catalog)
        w = model.item_vectors(catalog)
        assert torch.equal(model.scores(users, w), plain.scores(users, w))
        assert torch.equal(model.click_probability(users, w[:3]), plain.click_probability(users, w[:3]))
        model.retrieval_prior.weight.copy_(w[4])  # item 4's own direction: its prior is the largest
        model.ctr_prior.weight.copy_(w[4])
        shift = model.scores(users, w) - plain.scores(users, w)
        prior = model.retrieval_prior(w).squeeze(-1)
        p, p_plain = model.click_probability(users, w[[4, 4, 4]]), plain.click_probability(users, w[[4, 4, 4]])
    assert torch.allclose(shift, prior.expand_as(shift), atol=1e-5) and int(prior.argmax()) == 4
    assert (p > p_plain).all()
    model.save_pretrained(str(tmp_path / "m"), tokenizer, catalog)
    with torch.no_grad():
        reloaded = URM.from_pretrained(str(tmp_path / "m"))
        assert torch.equal(reloaded.scores(users, w), model.scores(users, w))


def test_the_item_bias_starts_at_the_training_targets_log_frequency_and_leaves_untrained_items_average(tokenizer, tmp_path):
    plain, model = tiny_model(tokenizer).eval(), tiny_model(tokenizer, item_bias=True).eval()
    catalog = tiny_catalog()
    everything = torch.arange(N_ITEMS)  # the last 2 items are beyond n_items_trained: new since training
    with torch.no_grad():
        users, _ = model.encode(batch_of(model, tokenizer), catalog)
        w = model.item_vectors(catalog)
        assert torch.equal(model.scores(users, w, everything), plain.scores(users, w))
        with pytest.raises(ValueError, match="catalogue indices"):
            model.scores(users, w)
        counts = torch.tensor([9.0, 0, 3, 0, 0, 0, 1, 0] + [0] * (N_ITEMS - 10))
        eligible = torch.tensor([True, True, True, False, True, True, True, False] + [True] * (N_ITEMS - 10))
        model.init_item_bias(counts, eligible)
        shift = model.scores(users, w, everything) - plain.scores(users, w)
        p = model.click_probability(users, w[[0, 0, 0]], index=torch.tensor([0, 0, 0]))
        p_plain = plain.click_probability(users, w[[0, 0, 0]])
        model.ctr_item_bias_weight.fill_(1.0)
        p_read = model.click_probability(users, w[[0, 0, 0]], index=torch.tensor([0, 0, 0]))
    logs = torch.log1p(counts)
    expected = torch.cat([torch.where(eligible, logs - logs[eligible].mean(), 0.0), torch.zeros(2)])
    assert torch.allclose(shift, expected.expand_as(shift), atol=1e-5)
    assert shift[0, 3] == 0 and shift[0, N_ITEMS - 1] == 0  # not shown in the window / new since: the average item
    assert shift[0, 1] < 0 < shift[0, 2] < shift[0, 0]  # never chosen < average < chosen 3 times < chosen 9 times
    assert torch.equal(p, p_plain) and (p_read > p).all()  # the CTR logit reads the bias with a learned weight, from 0
    model.save_pretrained(str(tmp_path / "m"), tokenizer, catalog)
    with torch.no_grad():
        assert torch.equal(URM.from_pretrained(str(tmp_path / "m")).scores(users, w, everything),
                           model.scores(users, w, everything))


def test_the_ctr_item_offset_starts_at_zero_moves_only_the_click_logit_and_leaves_new_items_at_zero(tokenizer, tmp_path):
    plain, model = tiny_model(tokenizer).eval(), tiny_model(tokenizer, ctr_item_bias=True).eval()
    catalog = tiny_catalog()
    shown = torch.tensor([0, 1, N_ITEMS - 1])  # the last item is beyond n_items_trained: new since training
    with torch.no_grad():
        users, _ = model.encode(batch_of(model, tokenizer), catalog)
        w = model.item_vectors(catalog)
        assert torch.equal(model.click_probability(users, w[shown], index=shown), plain.click_probability(users, w[shown]))
        model.ctr_item_offset.weight.fill_(2.0)
        p = model.click_probability(users, w[shown], index=shown)
        p_plain = plain.click_probability(users, w[shown])
        assert torch.equal(model.scores(users, w), plain.scores(users, w))  # retrieval never reads it
    assert (p[:2] > p_plain[:2]).all() and p[2] == p_plain[2]
    model.save_pretrained(str(tmp_path / "m"), tokenizer, catalog)
    with torch.no_grad():
        assert torch.equal(URM.from_pretrained(str(tmp_path / "m")).click_probability(users, w[shown], index=shown), p)
    with pytest.raises(ValueError, match=r"\(ctr_item_bias\): pass the items' catalogue indices"):
        model.click_probability(users, w[shown])  # the error names the table that needs the indices


def test_training_loss_falls(tokenizer):
    model = tiny_model(tokenizer).train()
    catalog = tiny_catalog()
    batch = batch_of(model, tokenizer)
    targets = LossTargets(items=torch.tensor([3, 6, 9]), labels=torch.tensor([float("nan"), float("nan"), 1.0]))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    losses = []
    for _ in range(30):
        loss, parts = model(batch, catalog, targets)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    assert set(parts) == {"retrieval", "ctr"}
    assert losses[-1] < 0.5 * losses[0]


def test_sampled_softmax_with_logq_trains_too(tokenizer):
    model = tiny_model(tokenizer).train()
    catalog = tiny_catalog()
    batch = batch_of(model, tokenizer)
    probs = torch.full((N_ITEMS,), 1.0 / N_ITEMS)
    targets = LossTargets(items=torch.tensor([3, 6, 9]), labels=torch.full((3,), float("nan")),
                          sampling_probs=probs, num_negatives=6)
    loss, parts = model(batch, catalog, targets)
    assert torch.isfinite(loss) and parts["retrieval"] > 0
    loss.backward()


def test_lm_head_learns_text_after_the_lm_marker(tokenizer):
    model = tiny_model(tokenizer).train()
    collator = Collator(tokenizer, model.config)
    target = collator.tokenize(["trail running shoes"])[0]
    batch = collator(collator.tokenize(PROMPTS[:1]), HISTORIES[:1], [target])
    assert LM_TOKEN in tokenizer.convert_ids_to_tokens(batch.input_ids[0].tolist())
    assert (batch.lm_labels[0] != -100).sum() == len(target) + 1
    _, hidden = model.encode(batch, tiny_catalog())
    assert float(model.lm_loss(hidden, batch.lm_labels)) > 0


def test_saved_model_reloads_through_from_pretrained_and_scores_identically(tokenizer, tmp_path):
    model = tiny_model(tokenizer).eval()
    catalog = tiny_catalog()
    model.save_pretrained(str(tmp_path / "m"), tokenizer, catalog)
    reloaded = URM.from_pretrained(str(tmp_path / "m"))
    reloaded_catalog = ItemCatalog.load(str(tmp_path / "m"))
    with torch.no_grad():
        a = model.scores(model.encode(batch_of(model, tokenizer), catalog)[0], model.item_vectors(catalog))
        b = reloaded.scores(reloaded.encode(batch_of(reloaded, tokenizer), reloaded_catalog)[0],
                            reloaded.item_vectors(reloaded_catalog))
    assert torch.equal(a, b)
    assert reloaded_catalog.item_ids == catalog.item_ids


def test_a_saved_ctr_history_model_scores_clicks_from_the_history_item_ids(tokenizer, tmp_path):
    model = tiny_model(tokenizer, ctr_history=True).eval()
    catalog = tiny_catalog()
    model.save_pretrained(str(tmp_path / "m"), tokenizer, catalog)
    scorer = Scorer.load(str(tmp_path / "m"), device="cpu")
    ids = catalog.item_ids
    histories = [[ids[1], ids[2]], [], [ids[4]]]
    users = torch.nn.functional.normalize(torch.randn(3, 3, model.config.out_dim), dim=-1)
    with torch.no_grad():
        w = model.item_vectors(catalog)
        history = torch.stack([w[[1, 2]].mean(dim=0), torch.zeros_like(w[0]), w[4]])
        expected = model.click_probability(users, w[[0, 3, 5]], history).numpy()
    np.testing.assert_allclose(scorer.click_probability(users, [0, 3, 5], histories), expected, atol=1e-6)


def test_a_saved_ctr_text_history_model_scores_clicks_from_the_history_items_texts(tokenizer, tmp_path):
    model = tiny_model(tokenizer, ctr_history=True, ctr_text_history=True).eval()
    catalog = tiny_catalog()
    model.save_pretrained(str(tmp_path / "m"), tokenizer, catalog)
    scorer = Scorer.load(str(tmp_path / "m"), device="cpu")
    ids = catalog.item_ids
    users = torch.nn.functional.normalize(torch.randn(3, 3, model.config.out_dim), dim=-1)
    with torch.no_grad():
        w = model.item_vectors(catalog)
        history = torch.stack([w[[1, 2]].mean(dim=0), torch.zeros_like(w[0]), w[4]])
        text = URM.text_affinity(catalog, torch.tensor([1, 2, 4]), torch.tensor([0, 0, 2]), torch.tensor([0, 3, 5]))
        expected = model.click_probability(users, w[[0, 3, 5]], history, text_affinity=text).numpy()
        without_text = model.click_probability(users, w[[0, 3, 5]], history, text_affinity=torch.zeros(3)).numpy()
    scored = scorer.click_probability(users, [0, 3, 5], [[ids[1], ids[2]], [], [ids[4]]])
    np.testing.assert_allclose(scored, expected, atol=1e-6)
    assert not np.allclose(scored[[0, 2]], without_text[[0, 2]]) and scored[1] == pytest.approx(without_text[1])


def test_a_model_directory_without_safetensors_is_refused(tmp_path):
    (tmp_path / "pytorch_model.bin").write_bytes(b"not loaded")
    with pytest.raises(FileNotFoundError, match="has no model.safetensors"):
        URM.from_pretrained(str(tmp_path))


@pytest.mark.parametrize("hostile", ["<|item|>", "<|um|>", "< | lm | >", "<|eos|>", "<||item||>", "x<|pad|>y"])
def test_text_from_outside_can_never_become_a_control_token(tokenizer, hostile):
    ids = tokenizer(f"Great {neutralize(hostile)} product", add_special_tokens=False)["input_ids"]
    specials = set(tokenizer.all_special_ids)
    assert not specials & set(ids)
    if hostile in ("<|item|>", "<|um|>", "<|eos|>"):  # without neutralize these would be control tokens
        assert specials & set(tokenizer(f"Great {hostile} product", add_special_tokens=False)["input_ids"])


def test_control_tokens_are_single_special_tokens(tokenizer):
    for token in (ITEM_SLOT, QUERY_TOKEN, LM_TOKEN):
        assert len(tokenizer(token, add_special_tokens=False)["input_ids"]) == 1


def test_the_default_model_config_builds(tmp_path):
    from recllm.model.backbone import build_backbone

    backbone, tok = build_backbone(ModelConfig(vocab_size=300, hidden_size=32, num_layers=1, num_heads=2,
                                               intermediate_size=64), ["some text <|item|>"] * 10)
    assert backbone.config.model_type == "qwen2" and len(tok) == backbone.get_input_embeddings().weight.shape[0]


def _history_pool(model, tokenizer):
    catalog = tiny_catalog()
    batch = batch_of(model, tokenizer)
    with torch.no_grad():
        _, hidden = model.encode(batch, catalog)
        queries = torch.randn(len(PROMPTS), model.config.n_query_tokens, 32)
        values = model.item_head(model.fusion(batch.slot_items, catalog))
        return model.slot_pool(hidden, batch, queries, values), values, batch


def test_the_history_pool_starts_as_the_mean_of_each_rows_item_output_vectors(tokenizer):
    model = tiny_model(tokenizer).eval()
    model.config.slot_attention = True
    model = URM(model.config, model.backbone).eval()
    pooled, values, batch = _history_pool(model, tokenizer)
    assert pooled.shape == (3, model.config.n_query_tokens, 16)
    for row, history in enumerate(HISTORIES):
        expected = values[batch.slot_rows == row].mean(0) if history else torch.zeros(16)
        assert torch.allclose(pooled[row], expected.expand_as(pooled[row]), atol=1e-6)


def test_attention_pooling_weighs_only_the_rows_own_slots(tokenizer):
    model = tiny_model(tokenizer).eval()
    model.config.slot_attention = True
    model = URM(model.config, model.backbone).eval()
    torch.nn.init.normal_(model.slot_query.weight, std=1.0)
    pooled, values, batch = _history_pool(model, tokenizer)
    row0 = values[batch.slot_rows == 0]
    weights = torch.linalg.lstsq(row0.T, pooled[0].T).solution  # [2 slots, M]: pooled = weights^T @ values
    assert torch.allclose(weights.sum(0), torch.ones(model.config.n_query_tokens), atol=1e-4)
    assert (weights > -1e-5).all() and not torch.allclose(weights[0], weights[1])
    assert torch.allclose(pooled[1], values[batch.slot_rows == 1].expand_as(pooled[1]), atol=1e-6)
    assert torch.equal(pooled[2], torch.zeros_like(pooled[2]))


def test_an_id_only_model_reads_no_text_and_cannot_place_items_it_never_trained_on(tokenizer):
    model = tiny_model(tokenizer)
    model.config.id_only = True
    model = URM(model.config, model.backbone).eval()
    collator = Collator(tokenizer, model.config)
    assert collator.tokenize(PROMPTS) == [[model.config.item_slot_id] * 2, [model.config.item_slot_id], []]
    catalog = tiny_catalog()
    before = model.item_vectors(catalog)
    catalog.text.add_(5.0)
    assert torch.allclose(model.item_vectors(catalog), before)
    cold = torch.tensor([N_ITEMS - 2, N_ITEMS - 1])  # indices >= n_items_trained
    assert torch.allclose(model.item_vectors(catalog, cold)[0], model.item_vectors(catalog, cold)[1])

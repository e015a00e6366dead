/*
 * The server part's request parser (server/request.c): the JSON body of a completions, chat,
 * tokenize or detokenize request to a checked struct, or an OpenAI error naming the field. The
 * HTTP side, the engine thread and the answers are tests/server_check.sh's (curl) and
 * tests/server_openai.sh's (the openai client).
 */
#include "../server/server-int.h"

#include <check.h>
#include <jansson.h>
#include <string.h>

#include "check_util.h"

static struct duet__srv_request req;
static struct duet__srv_error err;

static bool parse(enum duet__srv_kind kind, const char *json)
{
    return duet__srv_request_parse(json, strlen(json), kind, &req, &err);
}

/* The body is refused with 400, naming param, with a message containing what. */
static void expect_refused(enum duet__srv_kind kind, const char *json, const char *param,
                           const char *what)
{
    ck_assert_msg(!parse(kind, json), "%s was accepted", json);
    ck_assert_int_eq(err.status, 400);
    ck_assert_str_eq(err.param, param);
    ck_assert_msg(strstr(err.message, what), "%s: message '%s' lacks '%s'", json, err.message,
                  what);
    ck_assert_ptr_null(req.prompts);
}

START_TEST(test_every_prompt_form_gives_one_choice_per_prompt)
{
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": \"Hello\"}"));
    ck_assert_uint_eq(req.n_prompts, 1);
    ck_assert_str_eq(req.prompts[0].text, "Hello");
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": [\"a\", \"b\\u0000c\"]}"));
    ck_assert_uint_eq(req.n_prompts, 2);
    ck_assert_uint_eq(req.prompts[1].text_len, 3);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": [1, 2, 3]}"));
    ck_assert_uint_eq(req.n_prompts, 1);
    ck_assert_uint_eq(req.prompts[0].n_ids, 3);
    ck_assert_int_eq(req.prompts[0].ids[2], 3);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": [[1], [2, 3]]}"));
    ck_assert_uint_eq(req.n_prompts, 2);
    ck_assert_uint_eq(req.prompts[1].n_ids, 2);
    duet__srv_request_fini(&req);
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": []}", "prompt", "empty");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": [1, -2]}", "prompt", "token ids");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": [[1], 2]}", "prompt", "list");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": 7}", "prompt", "must be a string");
}
END_TEST

START_TEST(test_defaults_follow_openai_and_vllm)
{
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"user\": \"me\"}"));
    ck_assert_int_eq(req.max_tokens, -1);
    ck_assert(req.temperature == 1.0 && req.top_p == 1.0 && req.top_k == 0);
    ck_assert(req.add_special_tokens && !req.stream && !req.has_seed);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}]}"));
    ck_assert(!req.add_special_tokens && req.add_generation_prompt);
    duet__srv_request_fini(&req);
}
END_TEST

START_TEST(test_fields_not_built_yet_are_refused_unless_neutral)
{
    ck_assert(parse(DUET__SRV_COMPLETIONS,
                    "{\"prompt\": \"x\", \"n\": 1, \"logprobs\": null, \"echo\": false, "
                    "\"presence_penalty\": 0, \"repetition_penalty\": 1, \"logit_bias\": {}}"));
    duet__srv_request_fini(&req);
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"best_of\": 2}", "best_of",
                   "'best_of' is not supported yet");
    ck_assert_str_eq(err.code, "unsupported_parameter");
    expect_refused(DUET__SRV_CHAT,
                   "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"echo\": true}",
                   "echo", "not supported yet");
}
END_TEST

START_TEST(test_logprobs_and_echo_are_read_per_endpoint)
{
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\"}"));
    ck_assert_int_eq(req.logprobs, -1);
    ck_assert(!req.echo);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"logprobs\": 0, \"echo\": true}"));
    ck_assert_int_eq(req.logprobs, 0);
    ck_assert(req.echo);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
                                    "\"top_logprobs\": 3, \"logprobs\": true}"));
    ck_assert_int_eq(req.logprobs, 3);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
                                    "\"logprobs\": true}"));
    ck_assert_int_eq(req.logprobs, 0);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
                                    "\"logprobs\": false, \"top_logprobs\": 0}"));
    ck_assert_int_eq(req.logprobs, -1);
    duet__srv_request_fini(&req);
    expect_refused(
        DUET__SRV_CHAT,
        "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"top_logprobs\": 2}",
        "top_logprobs", "'logprobs' must be set to true");
    expect_refused(DUET__SRV_CHAT,
                   "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"logprobs\": 2}",
                   "logprobs", "must be a boolean");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"logprobs\": 21}", "logprobs",
                   "must be in [0, 20]");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"logprobs\": true}", "logprobs",
                   "must be an integer");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"top_logprobs\": 2}",
                   "top_logprobs", "not supported yet");
}
END_TEST

START_TEST(test_n_and_priority_are_read)
{
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\"}"));
    ck_assert_uint_eq(req.n, 1);
    ck_assert_int_eq(req.priority, 0);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"n\": 4, \"priority\": -7}"));
    ck_assert_uint_eq(req.n, 4);
    ck_assert_int_eq(req.priority, -7);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_CHAT, "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
                                    "\"n\": null, \"priority\": null}"));
    ck_assert_uint_eq(req.n, 1);
    duet__srv_request_fini(&req);
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"n\": 0}", "n", "must be in [1,");
    expect_refused(DUET__SRV_CHAT,
                   "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], \"n\": 1.5}", "n",
                   "must be an integer");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"priority\": 2147483648}",
                   "priority", "must be in");
}
END_TEST

START_TEST(test_penalties_and_logit_bias_are_read_and_checked_as_vllm)
{
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\"}"));
    ck_assert(req.presence_penalty == 0 && req.frequency_penalty == 0);
    ck_assert(req.repetition_penalty == 1 && req.n_logit_bias == 0);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_CHAT,
                    "{\"messages\": [{\"role\": \"user\", \"content\": \"x\"}], "
                    "\"presence_penalty\": -1.5, \"frequency_penalty\": 2, "
                    "\"repetition_penalty\": 1.3, \"logit_bias\": {\"5\": 100, \"17\": -2.5}}"));
    ck_assert(req.presence_penalty == -1.5 && req.frequency_penalty == 2);
    ck_assert(req.repetition_penalty == 1.3);
    ck_assert_uint_eq(req.n_logit_bias, 2);
    ck_assert(req.logit_bias[0].token == 5 && req.logit_bias[0].bias == 100.0f);
    ck_assert(req.logit_bias[1].token == 17 && req.logit_bias[1].bias == -2.5f);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"presence_penalty\": null, "
                                           "\"repetition_penalty\": null, \"logit_bias\": null}"));
    ck_assert(req.repetition_penalty == 1 && req.n_logit_bias == 0);
    duet__srv_request_fini(&req);
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"presence_penalty\": 2.5}",
                   "presence_penalty", "[-2, 2]");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"frequency_penalty\": -3}",
                   "frequency_penalty", "[-2, 2]");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"repetition_penalty\": 0}",
                   "repetition_penalty", "> 0");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"logit_bias\": [1]}", "logit_bias",
                   "object");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"logit_bias\": {\"a\": 1}}",
                   "logit_bias", "token ids");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"logit_bias\": {\"-1\": 1}}",
                   "logit_bias", "token ids");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"logit_bias\": {\"5\": 101}}",
                   "logit_bias", "[-100, 100]");
    expect_refused(DUET__SRV_COMPLETIONS,
                   "{\"prompt\": \"x\", \"logit_bias\": {\"5\": 1, \"05\": 2}}", "logit_bias",
                   "twice");
}
END_TEST

START_TEST(test_unknown_fields_and_bad_values_name_the_field)
{
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"frobnicate\": 1}", "frobnicate",
                   "unknown field 'frobnicate'");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"messages\": []}", "messages",
                   "unknown field");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"max_tokens\": 0}", "max_tokens",
                   "must be in [1,");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"temperature\": \"hot\"}",
                   "temperature", "must be a number");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"top_p\": 0}", "top_p", "(0, 1]");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"stop\": [\"\"]}", "stop",
                   "non-empty");
    expect_refused(DUET__SRV_COMPLETIONS,
                   "{\"prompt\": \"x\", \"stream_options\": "
                   "{\"include_usage\": true}}",
                   "stream_options", "'stream': true");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"max_tokens\": 4}", "prompt", "required");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\",", "", "invalid JSON at line 1");
    expect_refused(DUET__SRV_COMPLETIONS, "[1]", "", "must be a JSON object");
    expect_refused(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"prompt\": \"y\"}", "",
                   "duplicate");
}
END_TEST

START_TEST(test_messages_stay_valid_utf8_when_cut)
{
    char body[512];
    json_t *msg, *param;

    /* a field name of 1 + 2 x 40 bytes: the message quotes 64 of them, cutting an 'é' */
    strcpy(body, "{\"prompt\": \"x\", \"a");
    for (int i = 0; i < 40; i++)
        strcat(body, "\xc3\xa9");
    strcat(body, "\": 1}");
    ck_assert(!parse(DUET__SRV_COMPLETIONS, body));
    msg = json_string(err.message);
    param = json_string(err.param);
    ck_assert_msg(msg && param, "not UTF-8: '%s' / '%s'", err.message, err.param);
    ck_assert(strstr(err.message, "unknown field 'a\xc3\xa9"));
    json_decref(msg);
    json_decref(param);
}
END_TEST

START_TEST(test_stop_strings_record_the_longest)
{
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"stop\": [\"ab\", \"\\n\\n\\n\"], "
                                           "\"stop_token_ids\": [7, 9], \"top_k\": -1}"));
    ck_assert_uint_eq(req.n_stop, 2);
    ck_assert_uint_eq(req.max_stop_len, 3);
    ck_assert_uint_eq(req.n_stop_token_ids, 2);
    ck_assert_int_eq(req.top_k, 0);
    duet__srv_request_fini(&req);
    ck_assert(parse(DUET__SRV_COMPLETIONS, "{\"prompt\": \"x\", \"stop\": \"END\"}"));
    ck_assert_uint_eq(req.n_stop, 1);
    ck_assert_str_eq(req.stop[0], "END");
    duet__srv_request_fini(&req);
}
END_TEST

START_TEST(test_chat_content_parts_are_joined_and_kwargs_kept)
{
    ck_assert(parse(DUET__SRV_CHAT,
                    "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"text\", "
                    "\"text\": \"a\"}, {\"type\": \"text\", \"text\": \"b\"}]}], "
                    "\"max_completion_tokens\": 5, \"chat_template_kwargs\": {\"x\": true}}"));
    ck_assert_str_eq(req.messages_json, "[{\"role\":\"user\",\"content\":\"a\\nb\"}]");
    ck_assert_str_eq(req.chat_kwargs_json, "{\"x\":true}");
    ck_assert_int_eq(req.max_tokens, 5);
    duet__srv_request_fini(&req);
    expect_refused(DUET__SRV_CHAT, "{\"messages\": [{\"content\": \"x\"}]}", "messages", "role");
    expect_refused(
        DUET__SRV_CHAT,
        "{\"messages\": [{\"role\": \"user\", \"content\": [{\"type\": \"image_url\"}]}]}",
        "messages", "not supported yet");
    expect_refused(DUET__SRV_CHAT, "{\"prompt\": \"x\"}", "prompt", "unknown field");
}
END_TEST

START_TEST(test_tokenize_takes_one_prompt_or_messages)
{
    ck_assert(parse(DUET__SRV_TOKENIZE, "{\"prompt\": \"x\", \"add_special_tokens\": false}"));
    ck_assert(!req.add_special_tokens);
    duet__srv_request_fini(&req);
    expect_refused(DUET__SRV_TOKENIZE, "{}", "prompt", "exactly one");
    expect_refused(DUET__SRV_TOKENIZE, "{\"prompt\": \"x\", \"max_tokens\": 3}", "max_tokens",
                   "unknown field");
    ck_assert(parse(DUET__SRV_DETOKENIZE, "{\"tokens\": [1, 2]}"));
    ck_assert_uint_eq(req.prompts[0].n_ids, 2);
    duet__srv_request_fini(&req);
    expect_refused(DUET__SRV_DETOKENIZE, "{\"tokens\": \"12\"}", "tokens", "token ids");
}
END_TEST

static Suite *server_suite(void)
{
    Suite *s = suite_create("server");
    const struct duet_test_case cases[] = {
        {"prompt forms", test_every_prompt_form_gives_one_choice_per_prompt},
        {"defaults", test_defaults_follow_openai_and_vllm},
        {"not built yet", test_fields_not_built_yet_are_refused_unless_neutral},
        {"n and priority", test_n_and_priority_are_read},
        {"logprobs and echo", test_logprobs_and_echo_are_read_per_endpoint},
        {"penalties", test_penalties_and_logit_bias_are_read_and_checked_as_vllm},
        {"bad fields", test_unknown_fields_and_bad_values_name_the_field},
        {"stop", test_stop_strings_record_the_longest},
        {"utf-8", test_messages_stay_valid_utf8_when_cut},
        {"chat", test_chat_content_parts_are_joined_and_kwargs_kept},
        {"tokenize", test_tokenize_takes_one_prompt_or_messages},
    };

    duet_test_add_cases(s, cases, sizeof(cases) / sizeof(cases[0]), NULL, NULL, 30);
    return s;
}

int main(void)
{
    return duet_test_run(server_suite());
}

/* cli/cmd-img.h: the 'vmhost img' verbs that live outside cmd-img.c, each
 * taking the arguments after 'img' (argv[0] is the verb) and returning
 * the exit status qemu-img would return. */
#pragma once

/* cmd-img-inspect.c */
int cmd_img_check(int argc, char **argv);
int cmd_img_map(int argc, char **argv);
int cmd_img_compare(int argc, char **argv);
int cmd_img_measure(int argc, char **argv);

/* cmd-img-amend.c */
int cmd_img_amend(int argc, char **argv);

/* cmd-img-write.c */
int cmd_img_commit(int argc, char **argv);
int cmd_img_rebase(int argc, char **argv);
int cmd_img_resize(int argc, char **argv);
int cmd_img_snapshot(int argc, char **argv);

/* cmd-img-push.c: push to a host, and its internal far side. */
struct vh_context;
int cmd_img_push(const struct vh_context *ctx, int argc, char **argv);
int cmd_img_receive(const struct vh_context *ctx, int argc, char **argv);
